"""The retrieval baselines written plainly in pandas: popularity, item co-visitation and the user's own history.

An independent implementation the tests hold the product's baselines to: spark_jobs/build_candidates.py proposes
their candidates with their scores and nightrec.ranking ranks them (what the nightly evaluation and, when the ranker
does not beat them, the published lists use); the lists must equal these on real data.

All three see only exposures before the anchor T and return, per user, a ranked list of K items from the catalogue.
Ties break by item id (scores are rounded to 1e-9 first, so sums that are equal in exact arithmetic tie).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

RECENCY_HALF_LIFE_DAYS = 14.0  # own history: an exposure 14 days old counts half as much as one from yesterday
POPULARITY_DAYS = 30  # popularity: distinct users per item over the last 30 days before T
COVISIT_DAYS = 30  # co-visitation: items engaged by the same user on the same day, over the last 30 days


@dataclass(frozen=True)
class History:
    """Exposures before T: user_id, item_id, category (level reached), ds."""

    exposures: pd.DataFrame
    until: date  # T: nothing on or after this day is in `exposures`

    def with_recency(self) -> pd.DataFrame:
        """The exposures with `age` (days before T) and `decayed` = level x 0.5^(age / 14 days): the own-history
        score of one exposure (recent and deep engagement count most)."""
        age = (pd.Timestamp(self.until) - pd.to_datetime(self.exposures["ds"])).dt.days.to_numpy(np.float64)
        decayed = self.exposures["category"].to_numpy(np.float64) * 0.5 ** (age / RECENCY_HALF_LIFE_DAYS)
        return self.exposures.assign(age=age, decayed=decayed)

    def recent(self, days: int) -> pd.DataFrame:
        return self.exposures[self.exposures["ds"] >= self.until - timedelta(days=days)]


def _ranked(scores: pd.Series, k: int) -> list[str]:
    """Top k index labels by score descending, ties by label ascending."""
    frame = scores.rename("score").reset_index()
    frame.columns = ["item_id", "score"]
    frame = frame.sort_values(["score", "item_id"], ascending=[False, True], kind="stable")
    return frame["item_id"].head(k).astype(str).tolist()


def popular_items(history: History, k: int) -> list[str]:
    recent = history.recent(POPULARITY_DAYS)
    if recent.empty:
        recent = history.exposures
    return _ranked(recent.groupby("item_id")["user_id"].nunique(), k)


def popularity(history: History, users: list[str], k: int) -> dict[str, list[str]]:
    """The same most popular items for everyone."""
    top = popular_items(history, k)
    return {u: top for u in users}


def _fill(head: list[str], popular: list[str], k: int) -> list[str]:
    seen = set(head)
    return head + [i for i in popular if i not in seen][: k - len(head)]


def own_history(history: History, users: list[str], k: int) -> dict[str, list[str]]:
    """Items the user engaged with, scored by sum(level x 0.5^(age / 14 days)) (recent and deep engagement first),
    then popular items."""
    popular = popular_items(history, k)
    scored = history.with_recency()
    totals = scored[scored["user_id"].isin(users)].groupby(["user_id", "item_id"])["decayed"].sum().round(9)
    out = {}
    by_user = {u: s.droplevel(0) for u, s in totals.groupby(level=0)}
    for user in users:
        head = _ranked(by_user[user], k) if user in by_user else []
        out[user] = _fill(head, popular, k)
    return out


def covisitation(history: History, users: list[str], k: int) -> dict[str, list[str]]:
    """Items that co-occur (same user, same day, last 30 days) with the items of the user's last active day, scored
    by co-occurrence counts; the user's own items are not excluded (people rebuy); then popular items."""
    popular = popular_items(history, k)
    recent = history.recent(COVISIT_DAYS)[["user_id", "item_id", "ds"]].drop_duplicates()
    baskets = recent.groupby(["user_id", "ds"])["item_id"].apply(list)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for items in baskets:
        if len(items) > 200:  # a crawler-sized day would dominate every neighbour list
            continue
        for a in items:
            for b in items:
                if a != b:
                    counts[a][b] += 1
    ex = history.exposures[history.exposures["user_id"].isin(users)]
    last_day = ex.groupby("user_id")["ds"].transform("max")
    seeds = ex[ex["ds"] == last_day].groupby("user_id")["item_id"].apply(list).to_dict()
    out = {}
    for user in users:
        scores: dict[str, float] = defaultdict(float)
        for seed in seeds.get(user, []):
            scores[seed] += 1.0  # the seed itself: recently touched
            for other, n in counts.get(seed, {}).items():
                scores[other] += n
        head = _ranked(pd.Series(scores, dtype=np.float64), k) if scores else []
        out[user] = _fill(head, popular, k)
    return out


BASELINES = {"popularity": popularity, "covisitation": covisitation, "own_history": own_history}
