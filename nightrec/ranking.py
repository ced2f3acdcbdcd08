"""The published lists' kernel: rank each user's candidates and keep the best k, with the sources that proposed them.

The candidates of an anchor (spark_jobs/build_candidates.py writes them: one row per user and item, the sources that
proposed it and every feature in `feature_names`) are grouped per user; `rank_users` scores them with a `Scorer` and
keeps the k best, score descending, ties to the smaller item id. The same function ranks inside Spark's
`mapInArrow` (spark_jobs/score_topk.py), in training's evaluation (training/ranker.py) and in the tests, so the
lists that are evaluated are the lists that are published.

Scorers: the LightGBM ranker (`BoosterScorer`), or a baseline or single model (`SourceScorer`): items in tiers by
the first source of a sequence that proposed them, inside a tier by that source's score (every source's score is
higher-is-better, so its own order is score desc, item id asc). The baselines are the retrieval baselines a shop
could run without a model: popularity (distinct users over 30 days), own history (the user's items by
sum(level x 0.5^(age / 14 days)), then popular items) and co-visitation (then popular items).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nightrec.config import CANDIDATE_SOURCES, MODEL_KINDS
from nightrec.storage import read_json
from nightrec.warehouse import Warehouse

WINDOWS = (7, 30, 90)  # the pair's events per level over these many days before the anchor
HALF_LIVES = (14, 60)  # the pair's interest scores (user_item_features)
MODEL_SOURCES = tuple(s for s in CANDIDATE_SOURCES if s in MODEL_KINDS)  # sources that are embedding models
# Lists a shop could make without a model: each is tiers of sources (the first that proposed an item decides).
BASELINES: dict[str, tuple[str, ...]] = {
    "popularity": ("popular_30d",),
    "own_history": ("history", "popular_30d"),
    "covisitation": ("covisitation", "popular_30d"),
}
CANDIDATE_KEYS = ("user_id", "item_id", "sources")
# A ranker version (models/ranker/<E>/, training/ranker.py writes it): the booster its metrics belong to (trained on
# the anchors before the held-out window) and the one that ranks the published lists (trained on every anchor).
EVALUATED_BOOSTER = "evaluated.txt"
SERVED_BOOSTER = "model.txt"


def pair_features(levels: int) -> list[str]:
    """The user x item features of a candidate, as of its anchor (0 or missing for items outside the history)."""
    names = ["pair__days_total", "pair__events_total"]
    for lv in range(1, levels + 1):
        names += [f"pair__level_{lv}_total", f"pair__days_reaching_level_{lv}", f"pair__days_since_level_{lv}"]
        names += [f"pair__level_{lv}_{w}d" for w in WINDOWS]
    names += [f"pair__open_intent_level_{lv}" for lv in range(1, levels)]  # reached lv after the last purchase
    names += ["pair__days_since_first", "pair__days_since_last"]
    names += [f"pair__interest_{hl}d" for hl in HALF_LIVES]
    names += ["pair__purchase_due"]  # days since the last purchase / the item's median days between purchases
    return names


def item_features(levels: int) -> list[str]:
    """The item's features as of the anchor (item_features of the day before)."""
    names = []
    for w in WINDOWS:
        names += [f"item__n_events_{w}d", f"item__n_users_{w}d", f"item__n_buyers_{w}d"]
    names += ["item__trend_7d_30d", "item__n_buyers_365d", "item__repurchase_rate_365d"]
    names += ["item__median_days_between_purchases_365d"]
    names += [f"item__conversion_level_{lv}_to_{lv + 1}_30d" for lv in range(1, levels)]
    return names


def user_features(levels: int) -> list[str]:
    """The user's features as of the anchor (user_features of the day before; missing after 90 quiet days)."""
    names = ["user__recency_days"]
    for w in WINDOWS:
        names += [f"user__active_days_{w}d", f"user__n_events_{w}d", f"user__n_level_{levels}_{w}d"]
    names += ["user__n_items_90d", "user__n_items_bought_90d", "user__repurchase_rate_90d"]
    return names


def source_features(sources: Sequence[str]) -> list[str]:
    """Each source's rank (1 = its best; missing when it did not propose the item) and score, and how many did."""
    return [name for s in sources for name in (f"rank__{s}", f"score__{s}")] + ["n_sources"]


def model_features(levels: int, sources: Sequence[str]) -> list[str]:
    """Model scores beyond the sources' own: GNOLR's P(highest level > c), c = 0..L-1."""
    return [f"gnolr__p_above_{c}" for c in range(levels)] if "gnolr" in sources else []


def feature_names(levels: int, sources: Sequence[str]) -> list[str]:
    """Every feature column of a candidate table, in the order the ranker reads them."""
    return (
        source_features(sources)
        + pair_features(levels)
        + item_features(levels)
        + user_features(levels)
        + model_features(levels, sources)
    )


class Scorer:
    """Scores the flattened candidates of a batch: (tier, score) per row; lower tiers first, inf leaves a row out."""

    name: str

    def __call__(self, column: Callable[[str], np.ndarray], rows: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


@dataclass
class SourceScorer(Scorer):
    """A list made of sources in tiers: the items the first source proposed by its score, then the next's, ..."""

    name: str
    tiers: tuple[str, ...]

    def __call__(self, column: Callable[[str], np.ndarray], rows: int) -> tuple[np.ndarray, np.ndarray]:
        tier = np.full(rows, np.inf)
        score = np.zeros(rows)
        for n, source in reversed(list(enumerate(self.tiers))):  # the first tier wins where several propose an item
            proposed = ~np.isnan(column(f"rank__{source}"))
            tier[proposed] = n
            score[proposed] = column(f"score__{source}")[proposed]
        return tier, score


def baseline_scorer(name: str) -> SourceScorer:
    return SourceScorer(name, BASELINES[name])


_BOOSTERS: dict[str, Any] = {}  # one parsed booster per model text and Python worker


@dataclass
class BoosterScorer(Scorer):
    """The LightGBM ranker: every candidate in one tier, by the booster's score (its model text travels to Spark
    executors; each worker parses it once)."""

    model_text: str
    name: str = "ranker"
    names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.names = self.booster().feature_name()

    def booster(self) -> Any:
        import lightgbm as lgb

        key = hashlib.sha256(self.model_text.encode()).hexdigest()
        if key not in _BOOSTERS:
            _BOOSTERS[key] = lgb.Booster(model_str=self.model_text)
        return _BOOSTERS[key]

    def __getstate__(self) -> dict[str, Any]:
        return {"model_text": self.model_text, "name": self.name, "names": self.names}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __call__(self, column: Callable[[str], np.ndarray], rows: int) -> tuple[np.ndarray, np.ndarray]:
        matrix = np.column_stack([column(n) for n in self.names]) if rows else np.zeros((0, len(self.names)))
        return np.zeros(rows), np.asarray(self.booster().predict(matrix), dtype=np.float64)


def group_by_user(flat: pa.Table) -> pa.Table:
    """A flat candidate table (a row per user and item) as one row per user with a list of candidate structs, users
    sorted: the shape `rank_users` takes (Spark builds the same with collect_list).

    A table already in user order (as `Candidates.table` reads a window's buyers) is neither sorted nor copied: the
    lists are views over its columns. Sorting copies every column, as much memory again as the candidates themselves.
    """
    users = np.asarray(flat.column("user_id").to_pylist(), dtype=object)
    if len(users) > 1 and not (users[1:] >= users[:-1]).all():
        order = np.argsort(users.astype(str), kind="stable")
        flat, users = flat.take(pa.array(order, pa.int64())), users[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.zeros(0, np.int64)
    offsets = np.r_[starts, len(users)].astype(np.int32)
    fields = [c for c in flat.column_names if c != "user_id"]
    struct = pa.StructArray.from_arrays([_one_chunk(flat.column(c)) for c in fields], names=fields)
    return pa.table(
        {
            "user_id": pa.array(users[starts] if len(users) else [], pa.string()),
            "candidates": pa.ListArray.from_arrays(pa.array(offsets), struct),
        }
    )


def _one_chunk(column: pa.ChunkedArray) -> pa.Array:
    # combine_chunks copies even a single chunk
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def output_schema(with_probabilities: bool) -> pa.Schema:
    fields = [
        ("user_id", pa.string()),
        ("rank", pa.int32()),
        ("item_id", pa.string()),
        ("score", pa.float32()),
        ("sources", pa.list_(pa.string())),
    ]
    if with_probabilities:
        fields.append(("p_at_least", pa.list_(pa.float32())))
    return pa.schema(fields)


def rank_users(batch: pa.RecordBatch | pa.Table, scorer: Scorer, k: int, levels: int = 0) -> pa.Table:
    """The k best candidates of each user in `batch` (user_id, candidates), best first.

    :param levels: when > 0 and the candidates carry GNOLR's probabilities, each row gets ``p_at_least``: P(highest
        level >= l) for l = 1..levels (null for items GNOLR cannot score).
    """
    candidates = batch.column("candidates")
    if isinstance(candidates, pa.ChunkedArray):
        candidates = candidates.combine_chunks()
    lengths = np.diff(np.asarray(candidates.offsets))
    flat: pa.StructArray = candidates.flatten()
    rows = len(flat)
    names = {f.name for f in flat.type}

    def column(name: str) -> np.ndarray:
        if name not in names:
            return np.full(rows, np.nan)
        values = flat.field(name)
        return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)

    tier, score = scorer(column, rows)
    owner = np.repeat(np.arange(len(lengths)), lengths)
    items = np.asarray(flat.field("item_id").to_pylist(), dtype=object)
    _, item_order = np.unique(items.astype(str), return_inverse=True) if rows else (None, np.zeros(0, np.int64))
    keep = np.flatnonzero(np.isfinite(tier))
    order = keep[np.lexsort((item_order[keep], -score[keep], tier[keep], owner[keep]))]
    owners = owner[order]
    starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]]) if len(order) else np.zeros(0, np.int64)
    position = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    chosen = order[position < k]
    ranks = position[position < k] + 1
    users = np.asarray(batch.column("user_id").to_pylist(), dtype=object)
    columns: dict[str, pa.Array] = {
        "user_id": pa.array(users[owner[chosen]] if len(chosen) else [], pa.string()),
        "rank": pa.array(ranks, pa.int32()),
        "item_id": pa.array(items[chosen] if len(chosen) else [], pa.string()),
        "score": pa.array(score[chosen], pa.float32()),
        "sources": flat.field("sources").take(pa.array(chosen, pa.int64())),
    }
    probabilities = levels > 0 and "gnolr__p_above_0" in names
    if probabilities:
        p = np.column_stack([column(f"gnolr__p_above_{c}")[chosen] for c in range(levels)]).astype(np.float32)
        missing = np.isnan(p).any(axis=1)
        columns["p_at_least"] = pa.array(
            [None if m else list(r) for r, m in zip(p, missing, strict=True)], pa.list_(pa.float32())
        )
    return pa.table(columns, schema=output_schema(probabilities))


def rank_in_batches(grouped: pa.Table, scorer: Scorer, k: int, max_rows: int, levels: int = 0) -> pa.Table:
    """`rank_users` over ``grouped`` a slice of whole users at a time, each slice at most ``max_rows`` candidates (or
    one user's): the same lists, with the scorer's working memory (the booster's float64 feature matrix, the item ids
    as Python strings) that of one slice rather than of every candidate at once, as Spark's Arrow batches bound it."""
    if grouped.num_rows == 0:
        return rank_users(grouped, scorer, k, levels)
    lengths = pc.list_value_length(grouped.column("candidates")).to_numpy(zero_copy_only=False)
    ends = np.cumsum(lengths)
    parts, start = [], 0
    while start < grouped.num_rows:
        before = ends[start - 1] if start else 0
        # the last user whose candidates still fit, and at least one user
        stop = max(start + 1, int(np.searchsorted(ends, before + max_rows, side="right")))
        parts.append(rank_users(grouped.slice(start, stop - start), scorer, k, levels))
        start = stop
    return pa.concat_tables(parts)


def lists_of(ranked: pa.Table) -> dict[str, list[str]]:
    """user -> item ids in rank order (the form training.metrics takes)."""
    frame = ranked.select(["user_id", "rank", "item_id"]).to_pandas().sort_values(["user_id", "rank"], kind="stable")
    return {u: g.tolist() for u, g in frame.groupby("user_id", sort=False)["item_id"]}


def night_decision(warehouse: Warehouse, night: date) -> dict[str, Any] | None:
    """What the ranker run of data day `night` decided to publish (``lists``: ranker or a baseline, ``ranker_version``,
    ``reason``), or None when no ranker ran that night."""
    path = warehouse.model_dir("ranker", night.isoformat()) / "metrics.json"
    if not path.is_file():
        return None
    return read_json(path).get("lists") or None


def served_booster(warehouse: Warehouse, version: str) -> str:
    """The model text of a ranker version's published booster."""
    return (warehouse.model_dir("ranker", version) / SERVED_BOOSTER).read_text()
