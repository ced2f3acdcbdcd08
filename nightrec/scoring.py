"""The top-k kernel: inner-product scores of a block of users against the whole catalogue, the best k per user.

Pure NumPy (float32 matmul + argpartition), so the Spark job (spark_jobs/score_topk.py), the benchmark's
single-process limit and the tests run the same code. Items are given sorted by item id, which makes the tie-break
(equal scores: the smaller item id first) a tie-break on the column index.

Ordinal models (GNOLR and its baselines) also give P(highest level >= l) per level l from the same embeddings: their
unified embedding is the T unit sub-embeddings concatenated, so each sub-embedding's cosine is the dot product of one
slice; ``head`` holds the model's gamma, cut-points or biases (training writes it into the model's manifest).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class TopK:
    """The best items of a block of users: ``items[r, :counts[r]]`` (column indices) and their scores, best first."""

    items: np.ndarray  # (B, k) int64; entries past counts[r] are meaningless
    scores: np.ndarray  # (B, k) float32
    counts: np.ndarray  # (B,) int64: min(k, eligible items of the user)


def top_k(
    users: np.ndarray,
    items: np.ndarray,
    k: int,
    excluded: Sequence[np.ndarray] | None = None,
    unavailable: np.ndarray | None = None,
) -> TopK:
    """The k highest inner products per user, ordered by score (desc) then item index (asc).

    :param users: (B, d) float32 user embeddings.
    :param items: (N, d) float32 item embeddings, rows sorted by item id.
    :param excluded: per user, the item indices to leave out (e.g. bought items).
    :param unavailable: (N,) bool, items nobody may get.
    """
    scores = users.astype(np.float32, copy=False) @ items.astype(np.float32, copy=False).T
    if unavailable is not None and unavailable.any():
        scores[:, unavailable] = -np.inf
    if excluded is not None:
        for row, cols in enumerate(excluded):
            if len(cols):
                scores[row, cols] = -np.inf
    n_items = scores.shape[1]
    kk = min(k, n_items)
    if kk == 0:
        empty = np.zeros((len(users), 0))
        return TopK(empty.astype(np.int64), empty.astype(np.float32), np.zeros(len(users), np.int64))
    chosen = (
        np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        if kk < n_items
        else np.tile(np.arange(n_items), (len(users), 1))
    )
    chosen_scores = np.take_along_axis(scores, chosen, axis=1)
    kth = chosen_scores.min(axis=1)
    # argpartition picks arbitrarily among items tied with the k-th score; where such ties cross the cut, take the
    # smallest indices (item ids) so the list is defined by the data alone.
    crowded = np.flatnonzero(np.isfinite(kth) & ((scores >= kth[:, None]).sum(axis=1) > kk))
    for row in crowded:
        above = np.flatnonzero(scores[row] > kth[row])
        tied = np.flatnonzero(scores[row] == kth[row])[: kk - len(above)]
        chosen[row] = np.concatenate([above, tied])
    chosen_scores = np.take_along_axis(scores, chosen, axis=1)
    order = np.lexsort((chosen, -chosen_scores))  # last key first: score desc, then index asc
    chosen = np.take_along_axis(chosen, order, axis=1)
    chosen_scores = np.take_along_axis(chosen_scores, order, axis=1)
    counts = np.isfinite(chosen_scores).sum(axis=1)
    return TopK(chosen.astype(np.int64), chosen_scores, counts.astype(np.int64))


def _logsigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def level_probabilities(head: dict[str, Any], users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """P(highest level > c), c = 0..T-1, for each (user, item) row pair, made non-increasing in c.

    :param head: ``kind`` (gnolr, nolr, bce, esmm), ``gamma``, ``boundaries`` T, and ``cut_points`` (gnolr, nolr) or
        ``bias`` (bce, esmm), as the trained model had them.
    :param users: (..., T * dim) unified user embeddings; ``items`` the same shape, paired row by row.
    """
    t = int(head["boundaries"])
    u = users.reshape(*users.shape[:-1], t, -1)
    i = items.reshape(*items.shape[:-1], t, -1)
    cos = (u * i).sum(-1).astype(np.float64)
    gamma = float(head["gamma"])
    kind = head["kind"]
    if kind == "gnolr":
        exceed = 1 / (1 + np.exp(-(gamma * np.cumsum(cos, axis=-1) - np.asarray(head["cut_points"]))))
    elif kind == "nolr":
        unified = cos.sum(-1, keepdims=True) / t
        exceed = 1 / (1 + np.exp(-(gamma * unified - np.asarray(head["cut_points"]))))
    elif kind == "bce":
        exceed = 1 / (1 + np.exp(-(gamma * cos + np.asarray(head["bias"]))))
    elif kind == "esmm":
        exceed = np.exp(np.cumsum(_logsigmoid(gamma * cos + np.asarray(head["bias"])), axis=-1))
    else:
        raise ValueError(f"No level probabilities for model kind {kind!r}")
    return np.minimum.accumulate(exceed, axis=-1).astype(np.float32)
