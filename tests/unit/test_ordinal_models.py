"""GNOLR and its baselines: the loss against hand computation, the guard, cut-points, and that each model learns."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training import metrics, ordinal
from training.towers import Inputs


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _unit_pair(cos: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Two unit vectors in 2-d with the given cosine."""
    return torch.tensor([1.0, 0.0]), torch.tensor([cos, math.sqrt(1 - cos * cos)])


def _gnolr(gamma: float, cuts: list[float], kind: str = "gnolr") -> ordinal.OrdinalTwoTower:
    rates = [1 / (1 + math.exp(a)) for a in cuts]  # a_c = ln((1 - p_c) / p_c)  <=>  p_c = sigmoid(-a_c)
    return ordinal.OrdinalTwoTower(kind, 3, 3, 0, 0, rates, dim=2, hidden=4, gamma=gamma)


def _sub_embeddings(cosines: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [_unit_pair(c) for c in cosines]
    return torch.stack([u for u, _ in pairs]).unsqueeze(0), torch.stack([i for _, i in pairs]).unsqueeze(0)


def test_cut_points_come_from_base_rates_and_stay_ordered():
    a = ordinal.cut_points([0.5, 0.2, 0.2, 0.0])
    assert a[0] == pytest.approx(0.0) and a[1] == pytest.approx(math.log(4))
    assert np.all(np.diff(a) > 0) and np.all(np.isfinite(a))  # equal and zero rates are guarded
    assert ordinal.exceed_rates(np.array([0, 1, 2, 2, 4]), 4).tolist() == [0.8, 0.6, 0.2, 0.2]


@pytest.mark.parametrize(
    ("category", "expected"),
    [
        # cos (0.5, -0.2), gamma 1, a (0, 1): P(k>0) = s(0.5), P(k>1) = s(0.5 - 0.2 - 1)
        (0, lambda p0, p1: -2 * math.log(1 - p0)),  # both sub-tasks see category 0
        (1, lambda p0, p1: -math.log(p0) - math.log(p0 - p1)),  # s=1: k>=1; s=2: k=1
        (2, lambda p0, p1: -math.log(p0) - math.log(p1)),  # s=1: k>=1; s=2: k>=2
    ],
)
def test_gnolr_nested_loss_matches_hand_computation(category, expected):
    model = _gnolr(gamma=1.0, cuts=[0.0, 1.0])
    user, item = _sub_embeddings([0.5, -0.2])
    p0, p1 = _sigmoid(0.5), _sigmoid(0.5 - 0.2 - 1.0)
    exceed = model.exceed(user, item)
    assert exceed[0].tolist() == pytest.approx([p0, p1], abs=1e-6)
    loss = model.loss_from_logits(model.exceed_logits(user, item), torch.tensor([category]))
    assert loss.item() == pytest.approx(expected(p0, p1), rel=1e-5)


def test_the_guard_keeps_unordered_probabilities_finite_and_reports_them_ordered():
    model = _gnolr(gamma=5.0, cuts=[0.0, 1.0])
    user, item = _sub_embeddings([-0.5, 1.0])  # P(k>0) = s(-2.5) < P(k>1) = s(2.5 - 1): out of order
    exceed = model.exceed(user, item)
    assert exceed[0, 1] > exceed[0, 0]
    probs = ordinal.category_probabilities(exceed)
    assert probs[0, 1].item() == pytest.approx(ordinal.PROBABILITY_FLOOR)
    logits = model.exceed_logits(user, item).detach().requires_grad_()
    loss = model.loss_from_logits(logits, torch.tensor([1]))
    # nested NLL (the floor keeps it finite) + the hinge: logits -2.5 and 5 * 0.5 - 1 = 1.5 are 4.0 out of order
    assert torch.isfinite(loss) and loss.item() == pytest.approx(
        -math.log(_sigmoid(-2.5)) - math.log(ordinal.PROBABILITY_FLOOR) + 4.0, rel=1e-4
    )
    loss.backward()
    # the clamped term passes no gradient; the hinge pulls the upper boundary down and the lower one up
    assert logits.grad[0, 1] > 0 and logits.grad[0, 0] < 0
    reported = ordinal.monotone(exceed.detach().numpy())
    assert reported[0, 1] <= reported[0, 0]


def test_order_violation_is_zero_for_ordered_logits_and_sums_the_rises():
    logits = torch.tensor([[2.0, 1.0, -3.0], [0.0, 0.5, 2.5], [1.0, 1.0, 1.0]])
    assert ordinal.order_violation(logits).tolist() == pytest.approx([0.0, 2.5, 0.0])


def test_with_close_base_rates_the_guard_keeps_gnolr_ordered():
    """Categories whose upper base rates nearly coincide (as Tmall's collect, cart and buy): trained with the
    guard, GNOLR's exceedance probabilities stay ordered; the floor alone let the last boundary overtake."""
    rng = np.random.default_rng(1)
    pos_u, pos_i = rng.uniform(size=40), rng.uniform(size=30)
    users, items = rng.integers(0, 40, 6000), rng.integers(0, 30, 6000)
    closeness = 1 - np.abs(pos_u[users] - pos_i[items]) + rng.normal(0, 0.05, 6000)
    categories = np.digitize(closeness, [0.55, 0.9, 0.905])  # k > 1 and k > 2 almost equally frequent
    rates = ordinal.exceed_rates(categories, 3)
    assert rates[1] - rates[2] < 0.02
    u, i, k = torch.as_tensor(users + 1), torch.as_tensor(items + 1), torch.as_tensor(categories)
    none, empty = torch.zeros((6000, 0)), torch.zeros((6000, 0), dtype=torch.long)
    batch = Inputs(u, none, empty, empty, empty, i, none, empty, k)
    torch.manual_seed(0)
    model = ordinal.OrdinalTwoTower("gnolr", 41, 31, 0, 0, rates, dim=8, hidden=32)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        optimiser.zero_grad()
        model.batch_loss(batch).backward()
        optimiser.step()
    with torch.no_grad():
        exceed = model(batch).numpy()
    assert (exceed[:, 1:] <= exceed[:, :-1] + 1e-6).mean() > 0.99


def test_learnable_cut_points_start_at_the_base_rates_and_keep_their_order():
    cuts = ordinal.CutPoints(ordinal.cut_points([0.6, 0.3, 0.1]), learnable=True)
    assert cuts().detach().numpy() == pytest.approx(ordinal.cut_points([0.6, 0.3, 0.1]), abs=1e-5)
    optimiser = torch.optim.SGD(cuts.parameters(), lr=1.0)
    for _ in range(50):  # push the last cut-point below the first: the parametrisation must not allow it
        optimiser.zero_grad()
        (cuts()[2] - cuts()[0]).backward()
        optimiser.step()
    assert torch.all(torch.diff(cuts()) > 0)


@pytest.mark.parametrize("kind", ordinal.MODELS)
def test_each_model_learns_an_ordinal_signal(kind):
    # 40 users x 30 items; the category grows with how close a user's and an item's hidden positions are
    rng = np.random.default_rng(0)
    pos_u, pos_i = rng.uniform(size=40), rng.uniform(size=30)
    users = rng.integers(0, 40, 6000)
    items = rng.integers(0, 30, 6000)
    closeness = 1 - np.abs(pos_u[users] - pos_i[items])
    categories = np.digitize(closeness + rng.normal(0, 0.05, 6000), [0.55, 0.75, 0.9])
    torch.manual_seed(0)
    model = ordinal.OrdinalTwoTower(kind, 41, 31, 0, 0, ordinal.exceed_rates(categories, 3), dim=8, hidden=32)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
    none = torch.zeros((6000, 0))
    empty = torch.zeros((6000, 0), dtype=torch.long)
    u, i, k = torch.as_tensor(users + 1), torch.as_tensor(items + 1), torch.as_tensor(categories)
    batch = Inputs(u, none, empty, empty, empty, i, none, empty, k)
    for _ in range(150):
        optimiser.zero_grad()
        loss = model.batch_loss(batch)
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        exceed = model(batch).numpy()
    assert exceed.shape == (6000, 3) and np.all((exceed > 0) & (exceed < 1))
    aucs = metrics.auc_per_level(categories, exceed, boundaries=[0, 1, 2])
    if kind in ordinal.PAPER_HEADS:
        # sigmoid(cos) with no scale or bias: it ranks, but its probabilities cannot leave [sigmoid(-1), sigmoid(1)]
        assert min(aucs.values()) > 0.8, aucs
        if kind == "bce_paper":
            assert exceed.min() >= 1 / (1 + np.e) - 1e-6 and exceed.max() <= 1 / (1 + np.exp(-1)) + 1e-6
    else:
        assert min(aucs.values()) > 0.85, aucs


def test_order_room_is_the_cut_point_gap_over_gamma_and_gnolr_stays_ordered_inside_it():
    rates = [0.2, 0.016, 0.0135, 0.013]
    cuts = ordinal.cut_points(rates)
    room = ordinal.order_room(cuts, 5.0)
    expected = np.diff(np.log((1 - np.array(rates)) / np.array(rates))) / 5.0
    assert room == pytest.approx(expected)
    assert room[0] > 0.5 and room[2] < 0.01  # click -> collect+ has room; cart+ -> buy almost none
    # a cosine at the room keeps P(k > c) <= P(k > c - 1); one just above it breaks the order at that boundary
    model = ordinal.OrdinalTwoTower("gnolr", 2, 2, 0, 0, rates, dim=2, hidden=4, gamma=5.0)
    user = torch.tensor([[[1.0, 0.0]] * 4])  # unit sub-embeddings: an item's first coordinate is the cosine

    def exceed(c: int, cosine: float) -> torch.Tensor:
        cosines = [cosine if j == c else 0.0 for j in range(4)]
        item = torch.tensor([[[x, math.sqrt(1 - x * x)] for x in cosines]])
        return model.exceed(user, item)[0].detach()

    for c in range(1, 4):
        inside, outside = exceed(c, float(room[c - 1]) - 1e-4), exceed(c, float(room[c - 1]) + 1e-3)
        assert inside[c] <= inside[c - 1]
        assert outside[c] > outside[c - 1]
