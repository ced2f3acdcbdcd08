"""The top-k kernel and the per-level probabilities on hand-made inputs, and the publication pointer's rules."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import numpy as np
import pytest
import torch

from nightrec import topk_publish
from nightrec.config import load_settings
from nightrec.errors import InputError
from nightrec.scoring import level_probabilities, top_k
from nightrec.storage import write_json_atomic
from nightrec.warehouse import Warehouse
from training.ordinal import MODELS, OrdinalTwoTower


def test_top_k_orders_by_score_then_item_and_breaks_ties_across_the_cut_by_item_id():
    items = np.array([[1.0], [3.0], [2.0], [3.0], [3.0], [0.0]], dtype=np.float32)  # scores = item values for u=1
    users = np.array([[1.0], [-1.0]], dtype=np.float32)
    best = top_k(users, items, 2)
    # user 1: three items tie at 3.0 (indices 1, 3, 4): the two smallest indices win, in index order
    assert best.items[0].tolist() == [1, 3] and best.scores[0].tolist() == [3.0, 3.0]
    # user -1: scores are -values: best is index 5 (0.0), then index 0 (-1.0)
    assert best.items[1].tolist() == [5, 0] and best.counts.tolist() == [2, 2]
    full = top_k(users, items, 10)  # k beyond the catalogue: every item, ordered
    assert full.items[0].tolist() == [1, 3, 4, 2, 0, 5] and full.counts.tolist() == [6, 6]


def test_top_k_leaves_out_excluded_and_unavailable_items_and_counts_what_is_left():
    items = np.eye(4, dtype=np.float32)
    users = np.array([[4, 3, 2, 1], [1, 2, 3, 4]], dtype=np.float32)
    unavailable = np.array([False, True, False, False])
    best = top_k(users, items, 3, excluded=[np.array([0]), np.array([], dtype=np.int64)], unavailable=unavailable)
    assert best.counts.tolist() == [2, 3]  # user 0: 4 items - 1 unavailable - 1 bought
    assert best.items[0, :2].tolist() == [2, 3]
    assert best.items[1].tolist() == [3, 2, 0]
    assert np.isneginf(best.scores[0, 2])


@pytest.mark.parametrize("kind", MODELS)
def test_level_probabilities_equal_the_torch_models(kind):
    """The NumPy head the Spark job uses gives the trained model's own P(k > c) (up to the reporting monotone step)."""
    torch.manual_seed(0)
    model = OrdinalTwoTower(kind, 5, 5, 2, 2, base_rates=[0.3, 0.1, 0.05, 0.02], dim=6, learnable_cut_points=True)
    with torch.no_grad():  # move the learned parts away from their initial values
        model.cuts.gaps.add_(torch.randn_like(model.cuts.gaps) * 0.3)
        if hasattr(model, "bias"):
            model.bias.add_(torch.randn_like(model.bias) * 0.3)
    user = torch.nn.functional.normalize(torch.randn(7, 4, 6), dim=-1)
    item = torch.nn.functional.normalize(torch.randn(7, 4, 6), dim=-1)
    expected = np.minimum.accumulate(model.exceed(user, item).detach().numpy(), axis=1)
    got = level_probabilities(model.head(), model.unified(user).numpy(), model.unified(item).numpy())
    assert got.shape == (7, 4)
    assert np.allclose(got, expected, atol=1e-5)
    assert (np.diff(got, axis=1) <= 0).all()


@pytest.fixture
def settings(tmp_path):
    base = load_settings("local", env={}).with_overrides(warehouse_root=tmp_path)
    return base.with_overrides(topk=replace(base.topk, keep_versions=2))


def _written(settings, day: str, version: str) -> None:
    directory = topk_publish.version_dir(settings, date.fromisoformat(day), version)
    directory.mkdir(parents=True)
    write_json_atomic(directory / "_SUCCESS", {"rows": 1})


def test_publish_moves_forward_keeps_a_bounded_history_and_rolls_back(settings):
    for day in ("2014-08-10", "2014-08-11", "2014-08-12", "2014-08-13"):
        _written(settings, day, "m-1")
        topk_publish.publish(settings, date.fromisoformat(day), "m-1", {"rows": 1})
    now = topk_publish.current(settings)
    assert now["ds"] == "2014-08-13" and [h["ds"] for h in now["history"]] == ["2014-08-11", "2014-08-12"]
    link = Warehouse.of(settings).serving_topk() / "current"
    assert link.resolve() == topk_publish.version_dir(settings, date(2014, 8, 13), "m-1").resolve()
    # the same version again (a rerun): no new history entry, a new publication number
    again = topk_publish.publish(settings, date(2014, 8, 13), "m-1", {"rows": 1})
    assert [h["ds"] for h in again["history"]] == ["2014-08-11", "2014-08-12"]
    assert again["publication"] == now["publication"] + 1
    # a backfill of an earlier day is written but never moves the pointer backwards
    _written(settings, "2014-08-01", "m-0")
    assert topk_publish.publish(settings, date(2014, 8, 1), "m-0", {"rows": 1})["ds"] == "2014-08-13"
    back = topk_publish.rollback(settings)
    assert back["ds"] == "2014-08-12" and back["served_ds"] == "2014-08-13"
    assert topk_publish.feature_time(back) > topk_publish.feature_time(again)  # newer: Redis accepts the write
    assert link.resolve().name == "model=m-1" and link.resolve().parent.name == "ds=2014-08-12"
    topk_publish.rollback(settings)
    with pytest.raises(InputError, match="No earlier top-k version"):
        topk_publish.rollback(settings)


def test_publish_refuses_a_version_that_was_not_completely_written(settings):
    topk_publish.version_dir(settings, date(2014, 8, 10), "m-1").mkdir(parents=True)  # no _SUCCESS
    with pytest.raises(InputError, match="No complete top-k version"):
        topk_publish.publish(settings, date(2014, 8, 10), "m-1", {})
    assert topk_publish.current(settings) is None
