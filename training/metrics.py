"""Evaluation metrics: ranking quality (AUC per level, GAUC, Recall@K, NDCG@K, MRR), catalogue coverage, novelty and
item-exposure fairness (Gini and entropy with their corrected min-max forms).

Conventions, so that figures from different models compare:
- Recommendation lists are per user, best first; `relevant` holds the items a user engaged with in the test period.
  Users without relevant items are left out of Recall/NDCG/MRR (they have nothing to find), and say so in `users`.
- Recall@K = hits in the top K / number of relevant items. NDCG@K uses binary gains and the ideal DCG of
  min(K, |relevant|) hits. MRR is the reciprocal rank of the first hit within the top K (0 without a hit).
- Fairness follows Rampisela et al., "Evaluation Measures of Individual Item Fairness for Recommender Systems: A
  Critical Study" (TORS 2024): exposure counts over the whole catalogue (items never recommended count as 0); the
  raw Gini and entropy cannot reach their textbook bounds when every user gets K distinct items, so the corrected
  forms rescale them between the least and the most fair distributions that |users| x K recommendations allow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half); NaN when one class is missing."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)  # average ranks for ties: the Mann-Whitney form of the AUC
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_per_level(categories: np.ndarray, exceed: np.ndarray, boundaries: Sequence[int]) -> dict[int, float]:
    """AUC of P(k > c) against the event k > c, for each boundary c.

    :param categories: the ordinal category of each example.
    :param exceed: an (examples x T) matrix, column c holding the model's P(k > c).
    :param boundaries: which boundaries to score (e.g. only those that real exposures can tell apart).
    """
    categories = np.asarray(categories)
    return {c: auc(categories > c, exceed[:, c]) for c in boundaries}


def gauc(groups: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
    """Group (user) AUC: the per-user AUCs averaged with weights = the user's examples; users whose examples are all
    of one class carry no ranking information and are left out. NaN when no user qualifies."""
    groups = np.asarray(groups)
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(groups, kind="stable")
    groups, labels, scores = groups[order], labels[order], scores[order]
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    ends = np.r_[starts[1:], len(groups)]
    total = weight = 0.0
    for start, end in zip(starts, ends, strict=True):
        value = auc(labels[start:end], scores[start:end])
        if not math.isnan(value):
            total += value * (end - start)
            weight += end - start
    return total / weight if weight else float("nan")


@dataclass(frozen=True)
class RankingMetrics:
    """Top-K quality over the users that have relevant items."""

    k: int
    users: int
    recall: float
    ndcg: float
    mrr: float


def per_user_ranking(
    recommended: Mapping[str, Sequence[str]], relevant: Mapping[str, set[str]], k: int
) -> dict[str, np.ndarray]:
    """Recall@K, NDCG@K and reciprocal rank per user with at least one relevant item (for paired bootstraps); users
    in sorted order under "users". A user with relevant items but no list scores 0, never absent: a model that
    cannot score a user must not look better."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    users = sorted(u for u, items in relevant.items() if items)
    recall, ndcg, rr = np.zeros(len(users)), np.zeros(len(users)), np.zeros(len(users))
    for n, user in enumerate(users):
        items = relevant[user]
        top = list(recommended.get(user, ()))[:k]
        hits = np.array([item in items for item in top], dtype=bool)
        if not hits.any():
            continue
        recall[n] = hits.sum() / len(items)
        ndcg[n] = discounts[: len(top)][hits].sum() / discounts[: min(k, len(items))].sum()
        rr[n] = 1.0 / (int(np.argmax(hits)) + 1)
    return {"users": np.array(users, dtype=object), "recall": recall, "ndcg": ndcg, "rr": rr}


def ranking_metrics(
    recommended: Mapping[str, Sequence[str]], relevant: Mapping[str, set[str]], k: int
) -> RankingMetrics:
    """Recall@K, NDCG@K and MRR@K, averaged over users with at least one relevant item."""
    per_user = per_user_ranking(recommended, relevant, k)
    n = len(per_user["users"])
    if n == 0:
        return RankingMetrics(k, 0, float("nan"), float("nan"), float("nan"))
    return RankingMetrics(
        k, n, float(per_user["recall"].mean()), float(per_user["ndcg"].mean()), float(per_user["rr"].mean())
    )


def coverage(recommended: Mapping[str, Sequence[str]], catalogue_size: int, k: int) -> float:
    """Share of the catalogue that appears in at least one user's top K."""
    shown = {item for items in recommended.values() for item in list(items)[:k]}
    return len(shown) / catalogue_size if catalogue_size else float("nan")


def novelty(recommended: Mapping[str, Sequence[str]], item_users: Mapping[str, int], n_users: int, k: int) -> float:
    """Mean self-information -log2 p(i) of the recommended items, p(i) = the share of training users who engaged with
    item i (an item no training user touched counts as one user, the most novel that can be observed)."""
    shown = [item for items in recommended.values() for item in list(items)[:k]]
    bits = [-math.log2(max(item_users.get(item, 0), 1) / n_users) for item in shown]
    return float(np.mean(bits)) if bits else float("nan")


def _gini(exposure: np.ndarray) -> float:
    x = np.sort(exposure.astype(np.float64))
    n = len(x)
    total = x.sum()
    if total == 0:
        return 0.0
    index = np.arange(1, n + 1)
    return float(((2 * index - n - 1) * x).sum() / (n * total))


def _entropy(exposure: np.ndarray) -> float:
    p = exposure[exposure > 0].astype(np.float64)
    p = p / p.sum()
    return float(-(p * np.log(p)).sum())


def _extreme_exposures(n_users: int, n_items: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The most and the least fair exposure vectors that n_users lists of k distinct items allow."""
    slots = n_users * k
    q, r = divmod(slots, n_items)
    fairest = np.array([q + 1] * r + [q] * (n_items - r))
    unfairest = np.array([n_users] * k + [0] * (n_items - k))  # the same k items for everyone
    return fairest, unfairest


@dataclass(frozen=True)
class ExposureFairness:
    """Item-exposure fairness of top-K lists over a catalogue. Gini: 0 fair, higher unfair. Entropy (nats): higher
    fair. The corrected forms map the achievable range onto [0, 1] (Gini' 0 = as fair as possible, 1 = as unfair;
    entropy' 1 = as fair as possible, 0 = as unfair)."""

    gini: float
    gini_corrected: float
    entropy: float
    entropy_corrected: float


def exposure_fairness(recommended: Mapping[str, Sequence[str]], catalogue: Sequence[str], k: int) -> ExposureFairness:
    """Gini and entropy of how often each catalogue item is shown in the users' top K lists, raw and corrected."""
    position = {item: i for i, item in enumerate(catalogue)}
    exposure = np.zeros(len(catalogue), dtype=np.int64)
    lists = [list(items)[:k] for items in recommended.values()]
    for items in lists:
        for item in items:
            exposure[position[item]] += 1
    k_eff = min(k, len(catalogue))
    fairest, unfairest = _extreme_exposures(len(lists), len(catalogue), k_eff)
    gini, ent = _gini(exposure), _entropy(exposure)
    g_lo, g_hi = _gini(fairest), _gini(unfairest)
    e_lo, e_hi = _entropy(unfairest), _entropy(fairest)
    return ExposureFairness(
        gini=gini,
        gini_corrected=(gini - g_lo) / (g_hi - g_lo) if g_hi > g_lo else 0.0,
        entropy=ent,
        entropy_corrected=(ent - e_lo) / (e_hi - e_lo) if e_hi > e_lo else 1.0,
    )
