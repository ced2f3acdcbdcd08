"""Metrics on inputs small enough to check by hand (the expected values are worked out in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training import metrics


def test_auc_counts_ties_as_half():
    # positives 0.9, 0.2; negatives 0.9, 0.1: pairs 0.5 + 1 + 0 + 1 = 2.5 of 4
    assert metrics.auc(np.array([1, 0, 1, 0]), np.array([0.9, 0.9, 0.2, 0.1])) == pytest.approx(0.625)
    assert math.isnan(metrics.auc(np.array([1, 1]), np.array([0.3, 0.2])))


def test_auc_per_level_scores_each_boundary_with_its_own_column():
    categories = np.array([0, 1, 2, 3])
    exceed = np.array([[0.9, 0.1, 0.0], [0.9, 0.4, 0.1], [0.9, 0.35, 0.2], [0.9, 0.8, 0.3]])
    out = metrics.auc_per_level(categories, exceed, boundaries=[1, 2])
    # c=1: positives (k>1) 0.35, 0.8 against 0.1, 0.4 -> 3 of 4 pairs; c=2: 0.3 beats 0.0, 0.1, 0.2
    assert out == {1: pytest.approx(0.75), 2: pytest.approx(1.0)}


def test_gauc_weights_users_by_examples_and_skips_one_class_users():
    groups = np.array(["a", "b", "a", "b", "c", "b"])
    labels = np.array([1, 1, 0, 0, 0, 0])
    scores = np.array([0.9, 0.2, 0.1, 0.5, 0.7, 0.1])
    # a: AUC 1.0 over 2 examples; b: 0.2 vs (0.5, 0.1) -> 0.5 over 3; c has no positive
    assert metrics.gauc(groups, labels, scores) == pytest.approx((1.0 * 2 + 0.5 * 3) / 5)


def test_ranking_metrics_by_hand():
    recommended = {"u1": ["a", "b", "c"], "u2": ["x", "z"], "u4": ["a"]}
    relevant = {"u1": {"a", "c"}, "u2": {"z"}, "u3": {"q"}, "u4": set()}
    out = metrics.ranking_metrics(recommended, relevant, k=2)
    # u1: hit at 1 of 2 relevant; u2: hit at 2; u3: relevant but no list -> a miss; u4: nothing to find -> left out
    ndcg_u1 = 1.0 / (1.0 + 1.0 / math.log2(3))
    ndcg_u2 = 1.0 / math.log2(3)
    assert out.users == 3
    assert out.recall == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert out.ndcg == pytest.approx((ndcg_u1 + ndcg_u2) / 3)
    assert out.mrr == pytest.approx((1.0 + 0.5) / 3)


def test_coverage_and_novelty():
    recommended = {"u1": ["a", "b", "c"], "u2": ["x", "z"]}
    assert metrics.coverage(recommended, catalogue_size=10, k=2) == pytest.approx(0.4)
    # a: 4 of 8 users -> 1 bit; b: 1 of 8 -> 3 bits; c never seen counts as 1 of 8 -> 3 bits
    assert metrics.novelty({"u1": ["a", "b"]}, {"a": 4, "b": 1}, n_users=8, k=2) == pytest.approx(2.0)
    assert metrics.novelty({"u1": ["c"]}, {"a": 4}, n_users=8, k=1) == pytest.approx(3.0)


def test_exposure_fairness_raw_and_corrected():
    catalogue = ["a", "b", "c", "d"]
    unfair = metrics.exposure_fairness({"u1": ["a", "b"], "u2": ["a", "b"]}, catalogue, k=2)
    # exposure (0, 0, 2, 2): the raw Gini is 0.5, the most unequal that 2 lists of 2 allow -> corrected 1
    assert unfair.gini == pytest.approx(0.5) and unfair.gini_corrected == pytest.approx(1.0)
    assert unfair.entropy == pytest.approx(math.log(2)) and unfair.entropy_corrected == pytest.approx(0.0)
    fair = metrics.exposure_fairness({"u1": ["a", "b"], "u2": ["c", "d"]}, catalogue, k=2)
    assert fair.gini == pytest.approx(0.0) and fair.gini_corrected == pytest.approx(0.0)
    assert fair.entropy_corrected == pytest.approx(1.0)
    middle = metrics.exposure_fairness({"u1": ["a", "b"], "u2": ["a", "c"]}, catalogue, k=2)
    # exposure (2, 1, 1, 0): Gini = (-1*1 + 1*1 + 3*2) / (4*4) = 0.375 -> 0.75 of the way to 0.5;
    # entropy 1.5 ln 2, between ln 2 and ln 4 -> 0.5
    assert middle.gini == pytest.approx(0.375) and middle.gini_corrected == pytest.approx(0.75)
    assert middle.entropy == pytest.approx(1.5 * math.log(2)) and middle.entropy_corrected == pytest.approx(0.5)
