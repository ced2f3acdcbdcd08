"""Ordinal engagement models on one two-tower backbone: GNOLR and its baselines (independent BCE, ESMM, Neural OLR).

Categories (docs/architecture.md, "Exposure and labels"): k = 0 for an item the user did not touch (sampled), k = 1..L
for the highest behaviour level of a real exposure (Tmall: click 1 < collect 2 < cart 3 < buy 4). T = L boundaries;
boundary c (0-based) separates k <= c from k > c.

GNOLR (seed paper "Embed Progressive Implicit Preference in Unified Space for Deep Collaborative Filtering"):
each tower gives T L2-normalised sub-embeddings e^1..e^T;

    P(k > c) = sigmoid(gamma * sum_{j <= c} cos(e_u^j, e_i^j) - a_c),    a_c = ln((1 - p_c) / p_c)

with p_c the training base rate of k > c (fixed), or an order-preserving learnable variant. The nested loss sums,
over sub-tasks s = 1..T, the ordinal likelihood restricted to the categories 0..s (category s standing for k >= s).
A category's probability is a difference of two exceedance probabilities that the formula does not keep ordered, so
the guard has two parts: the probability is clamped at a small positive floor before the log (a finite loss), and a
hinge on the exceedance logits, sum_c relu(l_c - l_{c-1}), is added to the loss (a gradient back to order, which the
clamp alone does not give). Retrieval uses the unified embedding: the
concatenated sub-embeddings, whose inner product is sum_j cos_j.

Baselines share the backbone and differ only in the head:
- ``bce``: T independent heads, P(k > c) = sigmoid(gamma * cos_c + b_c), each a binary cross-entropy;
- ``esmm``: conditional heads q_c = P(k > c | k > c - 1), P(k > c) = prod_{j <= c} q_j, trained on the entire
  space (every boundary's BCE on its product, as ESMM does for CTR x CVR);
- ``nolr``: Neural ordinal logistic regression with one score, the cosine of the unified embeddings,
  P(k > c) = sigmoid(gamma * cos - a_c), and the full (not nested) ordinal likelihood.
- ``bce_paper``, ``esmm_paper``: the same heads as the GNOLR paper's official baselines score them, sigmoid(cos) with
  no scale and no bias. Ours give every head GNOLR's scale gamma and a learned bias that starts at the base rate, the
  fair comparison; the benchmark prints both, so the paper's ordering and the fair one stand side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from nightrec.config import ORDINAL_KINDS
from training.towers import Inputs, user_and_item_towers

MODELS = ORDINAL_KINDS  # the one enumeration is nightrec.config's
PAPER_HEADS = {"bce_paper": "bce", "esmm_paper": "esmm"}  # the paper's baselines: our head, no scale, no bias
PROBABILITY_FLOOR = 1e-6  # the guard: a category probability never reaches 0 (log(0) would be -inf)
MIN_RATE_GAP = 1e-4  # base rates kept strictly decreasing, so neighbouring cut-points never coincide


def cut_points(exceed_rates: Sequence[float]) -> np.ndarray:
    """a_c = ln((1 - p_c) / p_c) from the base rates p_c of k > c.

    Rates are clipped into (0, 1) and made strictly decreasing (p_c - p_{c+1} >= MIN_RATE_GAP): equal rates would give
    equal cut-points and a category with probability 0 at the start of training.
    """
    p = np.clip(np.asarray(exceed_rates, dtype=np.float64), MIN_RATE_GAP, 1 - MIN_RATE_GAP)
    for c in range(1, len(p)):
        p[c] = min(p[c], p[c - 1] - MIN_RATE_GAP)
    if p[-1] <= 0:
        raise ValueError(f"Base rates {list(exceed_rates)} leave no room for {len(p)} ordered cut-points")
    return np.log((1 - p) / p)


def exceed_rates(categories: np.ndarray, boundaries: int) -> np.ndarray:
    """p_c = share of examples with k > c, for c = 0..boundaries-1."""
    categories = np.asarray(categories)
    return np.array([(categories > c).mean() for c in range(boundaries)])


class CutPoints(nn.Module):
    """Fixed cut-points, or learnable ones kept in order: a_0 free, a_c = a_{c-1} + softplus(d_c)."""

    def __init__(self, initial: np.ndarray, learnable: bool) -> None:
        super().__init__()
        initial_t = torch.as_tensor(initial, dtype=torch.float32)
        self.learnable = learnable
        if learnable:
            gaps = torch.clamp(initial_t[1:] - initial_t[:-1], min=1e-3)
            self.first = nn.Parameter(initial_t[:1].clone())
            self.gaps = nn.Parameter(torch.log(torch.expm1(gaps)))  # inverse softplus: start at the fixed values
        else:
            self.register_buffer("fixed", initial_t)

    def forward(self) -> torch.Tensor:
        if not self.learnable:
            return self.fixed
        return torch.cat([self.first, self.first + torch.cumsum(F.softplus(self.gaps), dim=0)])


def category_probabilities(exceed: torch.Tensor) -> torch.Tensor:
    """From P(k > c) (B x T) to P(k = m) (B x T+1), each clamped at the floor (the guard)."""
    ones = torch.ones_like(exceed[:, :1])
    zeros = torch.zeros_like(exceed[:, :1])
    upper = torch.cat([ones, exceed], dim=1)  # P(k > m - 1), with P(k > -1) = 1
    lower = torch.cat([exceed, zeros], dim=1)  # P(k > m), with P(k > T) = 0
    return torch.clamp(upper - lower, min=PROBABILITY_FLOOR)


def ordinal_nll(exceed: torch.Tensor, categories: torch.Tensor) -> torch.Tensor:
    """-log P(k = y) per example under the ordinal model given by the exceedance probabilities."""
    probs = category_probabilities(exceed)
    return -torch.log(probs.gather(1, categories.view(-1, 1)).squeeze(1))


def order_violation(logits: torch.Tensor) -> torch.Tensor:
    """How far each example's exceedance logits rise from one boundary to the next (B,): sum_c relu(l_c - l_{c-1}).

    GNOLR's P(k > c) are ordered only while gamma * cos_c <= a_c - a_{c-1}; where neighbouring base rates are close
    (Tmall's collect, cart and buy) that gap is a few hundredths, so the ordering breaks easily. Added to GNOLR's loss
    with weight 1: zero while the boundaries are ordered, a constant pull back while they are not."""
    return F.relu(logits[:, 1:] - logits[:, :-1]).sum(1)


def order_room(cuts: Sequence[float], gamma: float) -> np.ndarray:
    """The largest cosine sub-embedding c (c = 1..T-1) can contribute while GNOLR's P(k > c) stays at or below
    P(k > c - 1): (a_c - a_{c-1}) / gamma. Where neighbouring boundaries have nearly the same base rate (on Tmall few
    exposures end at collect or cart, most that pass click end at buy, so k > 1, k > 2 and k > 3 are nearly the same
    set) this is a few hundredths, and the guard holds that sub-embedding's cosine near zero: the boundary's score is,
    in effect, the previous boundary's. A diagnostic; benchmarks/training_quality.py prints it."""
    a = np.asarray(cuts, dtype=np.float64)
    return (a[1:] - a[:-1]) / gamma


def nested_ordinal_nll(exceed: torch.Tensor, categories: torch.Tensor) -> torch.Tensor:
    """GNOLR's nested loss per example: sum over sub-tasks s = 1..T of the ordinal likelihood over categories 0..s,
    where the label is min(k, s) (category s stands for k >= s)."""
    total = torch.zeros_like(exceed[:, 0])
    for s in range(1, exceed.shape[1] + 1):
        total = total + ordinal_nll(exceed[:, :s], torch.clamp(categories, max=s))
    return total


class OrdinalTwoTower(nn.Module):
    """A user tower and an item tower with one of the ordinal heads in MODELS."""

    def __init__(
        self,
        kind: str,
        n_users: int,
        n_items: int,
        n_user_dense: int,
        n_item_dense: int,
        base_rates: Sequence[float],
        dim: int = 16,
        hidden: int = 64,
        gamma: float = 5.0,
        learnable_cut_points: bool = False,
        sequence_length: int = 0,
        item_attribute_values: Sequence[int] = (),
    ) -> None:
        super().__init__()
        if kind not in MODELS:
            raise ValueError(f"Unknown ordinal model {kind!r}; one of {MODELS}")
        self.kind, self.gamma = kind, gamma
        self.head_kind = PAPER_HEADS.get(kind, kind)  # the loss and probabilities follow the base head
        self.boundaries = len(base_rates)
        self.user, self.item = user_and_item_towers(
            n_users,
            n_items,
            n_user_dense,
            n_item_dense,
            self.boundaries,
            sequence_length,
            dim,
            self.boundaries,
            hidden,
            item_attribute_values,
        )
        initial = cut_points(base_rates)
        self.cuts = CutPoints(initial, learnable_cut_points)
        if kind in PAPER_HEADS:
            self.gamma = 1.0
            self.register_buffer("bias", torch.zeros(self.boundaries))
        elif kind in {"bce", "esmm"}:
            # heads start at the base rates, as GNOLR's cut-points do (ESMM's conditionals: p_c / p_{c-1})
            rates = 1 / (1 + np.exp(initial))
            if kind == "esmm":
                rates = rates / np.r_[1.0, rates[:-1]]
            self.bias = nn.Parameter(torch.as_tensor(np.log(rates / (1 - rates)), dtype=torch.float32))

    def cosines(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """cos(e_u^j, e_i^j) per sub-embedding (B x T); the sub-embeddings are unit vectors."""
        return (user * item).sum(-1)

    def exceed_logits(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        cos = self.cosines(user, item)
        if self.head_kind == "gnolr":
            return self.gamma * torch.cumsum(cos, dim=1) - self.cuts()
        if self.head_kind == "nolr":
            unified = cos.sum(1, keepdim=True) / self.boundaries  # cosine of the concatenated unit sub-embeddings
            return self.gamma * unified - self.cuts()
        return self.gamma * cos + self.bias  # bce: P(k > c); esmm: P(k > c | k > c - 1)

    def exceed(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """P(k > c) for c = 0..T-1 (B x T) from the towers' sub-embeddings."""
        return self._exceed(self.exceed_logits(user, item))

    def _exceed(self, logits: torch.Tensor) -> torch.Tensor:
        if self.head_kind == "esmm":
            return torch.exp(torch.cumsum(F.logsigmoid(logits), dim=1))
        return torch.sigmoid(logits)

    def user_vectors(self, x: Inputs) -> torch.Tensor:
        """The user's T sub-embeddings (B x T x dim)."""
        return self.user(x.user, x.user_dense, (x.seq_items, x.seq_levels, x.seq_gaps))

    def item_vectors(self, x: Inputs) -> torch.Tensor:
        return self.item(x.item, x.item_dense, attributes=x.item_attrs)

    def forward(self, x: Inputs) -> torch.Tensor:
        """P(k > c) (B x T) for a batch of (user, item) pairs."""
        return self.exceed(self.user_vectors(x), self.item_vectors(x))

    def batch_loss(self, x: Inputs) -> torch.Tensor:
        """The mean training loss of a batch."""
        return self.loss_from_logits(self.exceed_logits(self.user_vectors(x), self.item_vectors(x)), x.category)

    def loss_from_logits(self, logits: torch.Tensor, categories: torch.Tensor) -> torch.Tensor:
        if self.head_kind == "gnolr":
            # the guard, part two: the floor keeps the loss finite but passes no gradient, so without this hinge
            # nothing pulls disordered boundaries back (on Tmall every real exposure ended with P(k>2) > P(k>1))
            return (nested_ordinal_nll(self._exceed(logits), categories) + order_violation(logits)).mean()
        if self.head_kind == "nolr":
            return ordinal_nll(self._exceed(logits), categories).mean()
        targets = (categories.view(-1, 1) > torch.arange(self.boundaries, device=categories.device)).to(logits.dtype)
        if self.head_kind == "bce":  # the logit form is the numerically stable one
            return F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / len(categories)
        exceed = torch.clamp(self._exceed(logits), PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
        return F.binary_cross_entropy(exceed, targets, reduction="sum") / len(categories)

    def head(self) -> dict[str, Any]:
        """What turns unified embeddings into P(k > c) without torch (nightrec.scoring.level_probabilities)."""
        out: dict[str, Any] = {"kind": self.head_kind, "gamma": float(self.gamma), "boundaries": self.boundaries}
        with torch.no_grad():
            out["cut_points"] = [float(a) for a in self.cuts().cpu()]
            if hasattr(self, "bias"):
                out["bias"] = [float(b) for b in self.bias.cpu()]
        return out

    @staticmethod
    def unified(sub_embeddings: torch.Tensor) -> torch.Tensor:
        """The retrieval embedding: the T sub-embeddings concatenated (inner product = sum of the cosines)."""
        return sub_embeddings.flatten(1)


def monotone(exceed: np.ndarray) -> np.ndarray:
    """P(k > c) made non-increasing in c (a running minimum) for reporting; the guard in the loss keeps training well
    defined, this keeps published probabilities coherent (P(buy) never above P(cart or buy))."""
    return np.minimum.accumulate(exceed, axis=1)
