"""Consumer segments: the choices around the clustering that do not need Spark (spark_jobs/build_segments.py runs it).

- :func:`choose_k`: the k with the best silhouette (ties to the smaller k), or the fixed one;
- :func:`match_segments`: segment ids that survive from one night to the next: the night's centroids are matched to
  the previous night's one to one by least total distance (the Hungarian method); a cluster without a partner (k
  grew) gets a new id above every id used before, so an id never changes meaning silently;
- :func:`adjusted_rand_index`: the stability of the segmentation between two nights, on the consumers present in
  both, from the contingency table of their two segment ids (Hubert and Arabie, 1985): 1 for the same partition, about
  0 for an unrelated one;
- :func:`label`: a short automatic name from the most over-represented items (or their categories) and the
  behaviour that sets the segment apart, for an analyst to start from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from nightrec.errors import InputError
from nightrec.warehouse import complete_nights


def choose_k(silhouettes: Mapping[int, float]) -> int:
    """The k with the highest silhouette; the smaller k on a tie (fewer segments are easier to read)."""
    if not silhouettes:
        raise ValueError("No clustering was scored")
    return min(silhouettes, key=lambda k: (-round(silhouettes[k], 12), k))


def match_segments(
    centroids: np.ndarray, previous: np.ndarray | None, previous_ids: Sequence[int] = (), next_id: int = 0
) -> list[int]:
    """The id of each row of ``centroids``: the id of the previous centroid it is matched to, else a new one.

    :param previous: the previous night's centroids (one row per segment), or None on the first night.
    :param previous_ids: their ids, in row order.
    :param next_id: the smallest id never used (new segments count up from here, or from max(previous_ids) + 1).
    """
    k = len(centroids)
    ids = [-1] * k
    start = max([next_id, *[i + 1 for i in previous_ids]])
    if previous is not None and len(previous):
        distance = np.linalg.norm(np.asarray(centroids)[:, None, :] - np.asarray(previous)[None, :, :], axis=2)
        rows, cols = linear_sum_assignment(distance)
        for r, c in zip(rows, cols, strict=True):
            ids[r] = int(previous_ids[c])
    for r in range(k):
        if ids[r] < 0:
            ids[r] = start
            start += 1
    return ids


def adjusted_rand_index(contingency: np.ndarray) -> float:
    """ARI from the contingency table n[i, j] = consumers in segment i one night and j the other."""
    n = np.asarray(contingency, dtype=np.float64)
    total = n.sum()
    if total < 2:
        return float("nan")

    def pairs(x: np.ndarray) -> float:
        return float((x * (x - 1) / 2).sum())

    index = pairs(n)
    rows, cols = pairs(n.sum(axis=1)), pairs(n.sum(axis=0))
    expected = rows * cols / (total * (total - 1) / 2)
    maximum = (rows + cols) / 2
    if maximum == expected:  # both partitions trivial (one cluster, or all singletons): identical by definition
        return 1.0
    return float((index - expected) / (maximum - expected))


def contingency(previous: Sequence[int], current: Sequence[int]) -> np.ndarray:
    """The contingency table of two labelings of the same consumers."""
    a = np.unique(np.asarray(previous), return_inverse=True)[1]
    b = np.unique(np.asarray(current), return_inverse=True)[1]
    table = np.zeros((a.max(initial=-1) + 1, b.max(initial=-1) + 1), dtype=np.int64)
    np.add.at(table, (a, b), 1)
    return table


@dataclass(frozen=True)
class Behaviour:
    """A segment's behaviour beside the population's: mean events, share of consumers who reached the top level,
    mean days since the last event."""

    events: float
    top_level_share: float
    recency_days: float


TAG_RATIO = 1.5  # a segment is called "heavy", "buyers", "recent" ... when it differs from everyone by this factor


def behaviour_tags(segment: Behaviour, population: Behaviour) -> list[str]:
    """The behaviour words that set a segment apart from the population (empty when it is typical)."""
    tags = []

    def ratio(a: float, b: float) -> float:
        return a / b if b > 0 else (float("inf") if a > 0 else 1.0)

    events = ratio(segment.events, population.events)
    if events >= TAG_RATIO:
        tags.append("heavy")
    elif events <= 1 / TAG_RATIO:
        tags.append("light")
    if ratio(segment.top_level_share, population.top_level_share) >= TAG_RATIO:
        tags.append("buyers")
    recency = ratio(segment.recency_days, population.recency_days)
    if recency <= 1 / TAG_RATIO:
        tags.append("recent")
    elif recency >= TAG_RATIO:
        tags.append("lapsed")
    return tags


def label(top_names: Sequence[str], tags: Sequence[str], names: int = 3) -> str:
    """``"<the top lifted names> · <tags>"``, e.g. ``"Trousers, Jeans, Shorts · heavy buyers"``; the names are items,
    or their categories where the source has them, most over-represented first (duplicates dropped)."""
    seen: list[str] = []
    for name in top_names:
        if name and name not in seen:
            seen.append(name)
        if len(seen) == names:
            break
    head = ", ".join(seen) if seen else "no distinctive items"
    return f"{head} · {' '.join(tags)}" if tags else head


def profile_nights(profiles_root: Path) -> list[date]:
    """The nights whose segment profiles are complete, oldest first."""
    return complete_nights(profiles_root)


def membership_night(nights: Sequence[date], anchor: date) -> date | None:
    """The segmentation the lists for day ``anchor`` may read: the latest of ``nights`` on or before anchor - 2.

    The lists for A are made by night A - 1, and that night segments its consumers beside making them (the DAG's
    segments group is a branch of its own), so night A - 2 is the latest sure to exist when they are made. Reading
    it, not "the latest there is", keeps a rerun of night A - 1 identical whichever branch ends first, and keeps a
    night's own behaviour (the membership is a model output) out of the lists it judges.
    """
    usable = [n for n in nights if n <= anchor - timedelta(days=2)]
    return max(usable) if usable else None


def read_profiles(profiles_root: Path, night: date | None = None) -> tuple[date, pd.DataFrame]:
    """(the night, its segment profiles by segment id); the latest night by default.

    :raises InputError: no segments were built (for that night).
    """
    nights = profile_nights(profiles_root)
    if not nights:
        raise InputError(f"No segments under {profiles_root}: the nightly DAG's segments group has not run yet")
    night = night or nights[-1]
    if night not in nights:
        shown = ", ".join(str(n) for n in nights[-5:])
        raise InputError(f"No segments for {night}; nights with segments: {shown}")
    frame = pd.read_parquet(profiles_root / f"ds={night.isoformat()}")
    return night, frame.sort_values("segment_id").reset_index(drop=True)
