"""Build the candidates and features of every anchor of one night, the input of the ranker and of the published lists.

For each anchor A of the night (nightrec/anchors.py: the ranker's training anchors, the evaluation anchors and the
day the published lists are for) and each of its users, every item a source proposes, deduplicated, with:

- the sources that proposed it, each source's rank and score (score higher-is-better; ties by item id);
- the pair's repeat behaviour as of A (user_item_features: the pair's latest state before A, aged to A; events per
  level over 7/30/90 days; days since each level; reached a level after the last purchase; days since the last
  purchase over the item's median days between purchases);
- the item's and the user's features of day A - 1 (item_features, user_features);
- GNOLR's P(highest level > c) for the pair where GNOLR is a source.

Sources (ranker.sources): the user's whole history (by the own-history score), co-visitation and transitions
(clicked or carted X, then bought Y within 7 days), popular items over 7 and 30 days, trending items, the items
most engaged with by the members of the user's consumer segment (from the segmentation of night A - 2 or earlier:
nightrec.segments.membership_night; none before the segments' first nights), and each embedding model's top
items by inner product (GNOLR's with log q(item) added back: trained against items drawn by popularity, its raw
score prefers the long tail). The model sources use the night's models: the held-out model
(trained before C = T - ranker_days) on anchors from C to the last evaluation anchor, the refit on every day
(training.refit) on S. Anchors before C have no model columns.

Users per anchor: training anchors, the users who bought in its label window; evaluation anchors, the buyers of the
horizon; S, every user known by E. The table goes to ``candidates/ds=E/anchor=A/`` (written beside, swapped in).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from nightrec import ranking
from nightrec.adapters import load_adapter
from nightrec.anchors import AnchorPlan, plan_for
from nightrec.config import Settings
from nightrec.errors import InputError
from nightrec.scoring import level_probabilities, top_k
from nightrec.storage import fresh_staging, swap_into_place, write_json_atomic
from nightrec.warehouse import Warehouse
from spark_jobs.common import JobRun, log, run_job
from spark_jobs.segment_items import SEGMENT_DAYS, members_by_anchor, top_segment_items

JOB = "build_candidates"
KEYS = ["anchor", "user_id", "item_id"]
COVISIT_DAYS = 30  # co-visitation: same user, same day, over the 30 days before the anchor
MAX_BASKET = 200  # a crawler-sized day would dominate every neighbour list
TRANSITION_DAYS = 60  # transitions: touched X, then bought Y within TRANSITION_GAP days, over the 60 days before
TRANSITION_GAP = 7
SEED_DAYS = 14  # the user's items of the last 14 days seed the transitions, weighted 0.5^((age - 1) / 7)
TRENDING_MIN_USERS = 3  # an item needs this many users over 7 days to trend
SCORE_DECIMALS = 9  # every source's score is rounded to this many decimals before it is ranked (_ranked)


def _age(day: Column | str = "ds") -> Column:
    """Days from `day` to the anchor: 1 for the day before it."""
    return F.datediff(F.col("anchor"), F.col(day) if isinstance(day, str) else day)


def _ranked(frame: DataFrame, source: str, score: Column, limit: int | None, by: list[str] | None = None) -> DataFrame:
    """(anchor, user_id, item_id, source, rank, score) from scored rows, best first, ties to the smaller item id.

    The score is rounded to SCORE_DECIMALS first. Sums that are equal in exact arithmetic but added in another order
    differ in their last bits, and Spark's shuffles deliver rows in no fixed order: unrounded, such ties went by that
    noise instead of to the smaller item id, so two runs of a night (and two copies of one user in the same run) could
    get different items at a source's last rank (decision 46)."""
    by = by or ["anchor", "user_id"]
    ranked = frame.withColumn("score", F.round(score.cast("double"), SCORE_DECIMALS))
    order = Window.partitionBy(*by).orderBy(F.col("score").desc(), F.col("item_id"))
    ranked = ranked.withColumn("rank", F.row_number().over(order))
    if limit is not None:
        ranked = ranked.where(F.col("rank") <= limit)
    return ranked.select(*by, "item_id", F.lit(source).alias("source"), F.col("rank").cast("double"), "score")


class Inputs:
    """The marts the job reads and the night's anchors with their users."""

    def __init__(self, spark: SparkSession, settings: Settings, plan: AnchorPlan, top_level: int) -> None:
        self.spark, self.settings, self.plan, self.top_level = spark, settings, plan, top_level
        wh = Warehouse.of(settings)
        self.pairs = spark.read.parquet(str(wh.mart_export("user_item_features")))
        self.items = spark.read.parquet(str(wh.mart_export("item_features")))
        self.user_rows = spark.read.parquet(str(wh.mart_export("user_features")))
        self.anchors = spark.createDataFrame([(d,) for d in plan.days()], "anchor date")
        self.users = self._users()

    def _users(self) -> DataFrame:
        windows = [(d, n) for d, lengths in self.plan.label_windows().items() for n in lengths]
        windows_frame = F.broadcast(self.spark.createDataFrame(windows, "anchor date, days int"))
        labelled = (
            self.pairs.where(F.col("max_level_reached") == self.top_level)
            .join(windows_frame, (F.col("ds") >= F.col("anchor")) & (F.col("ds") < F.date_add("anchor", F.col("days"))))
            .select("anchor", "user_id")
        )
        known = self.pairs.where(F.col("ds") < F.lit(self.plan.serve)).select(
            F.lit(self.plan.serve).alias("anchor"), "user_id"
        )
        return labelled.unionByName(known).distinct()

    def history(self) -> DataFrame:
        """Each anchor user's pair-days before the anchor."""
        return self.pairs.join(self.users, "user_id").where(F.col("ds") < F.col("anchor"))

    def recent(self, days: int) -> DataFrame:
        """Every user's pair-days in the `days` before each anchor (the sources' co-occurrence statistics)."""
        return self.pairs.join(
            F.broadcast(self.anchors), (F.col("ds") < F.col("anchor")) & (F.col("ds") >= F.date_sub("anchor", days))
        )

    def day_before(self, table: DataFrame) -> DataFrame:
        """The rows of a daily feature mart as of each anchor: its day A - 1."""
        return table.join(F.broadcast(self.anchors), F.col("ds") == F.date_sub("anchor", 1))


def pair_features(inputs: Inputs) -> DataFrame:
    """The history source and the pair features: the latest state before the anchor, aged to it."""
    levels, top = range(1, inputs.top_level + 1), inputs.top_level
    state_columns = ["ds", "n_days_total", "n_events_total", "first_ds", "interest_14d", "interest_60d"]
    for lv in levels:
        state_columns += [f"n_level_{lv}_total", f"n_days_reaching_level_{lv}", f"last_ds_level_{lv}"]
    windowed = [
        F.sum(F.when(_age() <= w, F.col(f"n_level_{lv}")).otherwise(0)).alias(f"pair__level_{lv}_{w}d")
        for lv in levels
        for w in ranking.WINDOWS
    ]
    grouped = (
        inputs.history().groupBy(*KEYS).agg(F.max(F.struct(*[F.col(c) for c in state_columns])).alias("s"), *windowed)
    )
    out = grouped.select(
        *KEYS,
        F.col("s.n_days_total").alias("pair__days_total"),
        F.col("s.n_events_total").alias("pair__events_total"),
        *[F.col(f"s.n_level_{lv}_total").alias(f"pair__level_{lv}_total") for lv in levels],
        *[F.col(f"s.n_days_reaching_level_{lv}").alias(f"pair__days_reaching_level_{lv}") for lv in levels],
        *[_age(F.col(f"s.last_ds_level_{lv}")).alias(f"pair__days_since_level_{lv}") for lv in levels],
        *[f"pair__level_{lv}_{w}d" for lv in levels for w in ranking.WINDOWS],
        *[
            F.when(
                F.col(f"s.last_ds_level_{top}").isNull()
                | (F.col(f"s.last_ds_level_{lv}") > F.col(f"s.last_ds_level_{top}")),
                F.col(f"s.last_ds_level_{lv}").isNotNull().cast("int"),
            )
            .otherwise(0)
            .alias(f"pair__open_intent_level_{lv}")
            for lv in range(1, top)
        ],
        _age(F.col("s.first_ds")).alias("pair__days_since_first"),
        _age(F.col("s.ds")).alias("pair__days_since_last"),
        *[
            (F.col(f"s.interest_{hl}d") * F.pow(F.lit(0.5), _age(F.col("s.ds")) / hl)).alias(f"pair__interest_{hl}d")
            for hl in ranking.HALF_LIVES
        ],
    )
    return out


def history_source(pairs: DataFrame) -> DataFrame:
    """Every item of the user's history, by the own-history score (no cap)."""
    return _ranked(pairs, "history", F.col("pair__interest_14d"), None)


def popular_sources(inputs: Inputs, sources: tuple[str, ...], depth: int, fill_depth: int) -> DataFrame:
    """popular_7d, popular_30d (distinct users; at least `fill_depth` items, the fill of every list) and trending
    (users over 7 days against the 30-day average, with at least TRENDING_MIN_USERS), the same for every user."""
    items = inputs.day_before(inputs.items)
    lists = []
    if "popular_30d" in sources:
        lists.append(_ranked(items, "popular_30d", F.col("n_users_30d"), max(depth, fill_depth), ["anchor"]))
    if "popular_7d" in sources:
        lists.append(_ranked(items, "popular_7d", F.col("n_users_7d"), depth, ["anchor"]))
    if "trending" in sources:
        rising = items.where(F.col("n_users_7d") >= TRENDING_MIN_USERS)
        lists.append(_ranked(rising, "trending", F.col("trend_7d_30d"), depth, ["anchor"]))
    if not lists:
        return _empty_sources(inputs.spark)
    per_anchor = lists[0]
    for more in lists[1:]:
        per_anchor = per_anchor.unionByName(more)
    return inputs.users.join(F.broadcast(per_anchor), "anchor")


def covisitation_source(inputs: Inputs, history: DataFrame, depth: int) -> DataFrame:
    """Items engaged by the same user on the same day (30 days, every user) as the items of the user's last active
    day, scored by those co-occurrences plus 1 for each of the user's own items: training/retrieval_baselines.py's
    co-visitation, the baseline the lists must beat."""
    recent = inputs.recent(COVISIT_DAYS).select("anchor", "user_id", "ds", "item_id")
    sizes = recent.groupBy("anchor", "user_id", "ds").agg(F.count("*").alias("n"))
    baskets = recent.join(sizes.where(F.col("n") <= MAX_BASKET), ["anchor", "user_id", "ds"])
    pairs = (
        baskets.alias("a")
        .join(baskets.alias("b"), ["anchor", "user_id", "ds"])
        .where(F.col("a.item_id") != F.col("b.item_id"))
        .groupBy("anchor", F.col("a.item_id").alias("seed"), F.col("b.item_id").alias("item_id"))
        .agg(F.count("*").cast("double").alias("n"))
    )
    last_day = Window.partitionBy("anchor", "user_id")
    seeds = (
        history.withColumn("last_day", F.max("ds").over(last_day))
        .where(F.col("ds") == F.col("last_day"))
        .select("anchor", "user_id", F.col("item_id").alias("seed"))
    )
    neighbours = seeds.join(pairs, ["anchor", "seed"]).select("anchor", "user_id", "item_id", "n")
    themselves = seeds.select("anchor", "user_id", F.col("seed").alias("item_id"), F.lit(1.0).alias("n"))
    scored = neighbours.unionByName(themselves).groupBy("anchor", "user_id", "item_id").agg(F.sum("n").alias("n"))
    return _ranked(scored, "covisitation", F.col("n"), depth)


def transitions_source(inputs: Inputs, history: DataFrame, depth: int) -> DataFrame:
    """Items bought within TRANSITION_GAP days after another item was touched (distinct users, 60 days), from the
    user's items of the last SEED_DAYS days, each weighted 0.5^((age - 1) / 7)."""
    recent = inputs.recent(TRANSITION_DAYS).select("anchor", "user_id", "item_id", "ds", "max_level_reached")
    touched = recent.select("anchor", "user_id", F.col("item_id").alias("seed"), F.col("ds").alias("seen"))
    bought = recent.where(F.col("max_level_reached") == inputs.top_level).select("anchor", "user_id", "item_id", "ds")
    followed = (
        touched.join(bought, ["anchor", "user_id"])
        .where(
            (F.col("ds") > F.col("seen"))
            & (F.col("ds") <= F.date_add("seen", TRANSITION_GAP))
            & (F.col("seed") != F.col("item_id"))
        )
        .groupBy("anchor", "seed", "item_id")
        .agg(F.countDistinct("user_id").cast("double").alias("n"))
    )
    seeds = (
        history.where(_age() <= SEED_DAYS)
        .groupBy("anchor", "user_id", F.col("item_id").alias("seed"))
        .agg(F.min(_age()).alias("age"))
        .withColumn("weight", F.pow(F.lit(0.5), (F.col("age") - 1) / 7.0))
    )
    scored = (
        seeds.join(followed, ["anchor", "seed"])
        .groupBy("anchor", "user_id", "item_id")
        .agg(F.sum(F.col("weight") * F.col("n")).alias("score"))
    )
    return _ranked(scored, "transitions", F.col("score"), depth)


def segment_popular_source(inputs: Inputs, depth: int) -> DataFrame:
    """The items most members of the user's consumer segment engaged with over the 30 days before the anchor
    (distinct members), for users in a segmentation the anchor may read (spark_jobs/segment_items.py); anchors
    before the segments' first nights have none (the ranker sees the source's columns as missing there)."""
    members = members_by_anchor(inputs.spark, inputs.settings, inputs.plan.days())
    if members is None:
        return _empty_sources(inputs.spark)
    recent = inputs.recent(SEGMENT_DAYS).select("anchor", "user_id", "item_id")
    top = top_segment_items(recent, members, depth)
    users = inputs.users.join(members, ["anchor", "user_id"])
    return users.join(top, ["anchor", "segment_id"]).select(
        "anchor",
        "user_id",
        "item_id",
        F.lit("segment_popular").alias("source"),
        F.col("rank").cast("double"),
        F.col("n_members").alias("score"),
    )


def _empty_sources(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame(
        [], "anchor date, user_id string, item_id string, source string, rank double, score double"
    )


# ---------------------------------------------------------------------------------------------- embedding models


def model_embeddings(settings: Settings, plan: AnchorPlan, kind: str, version: str) -> dict[date, Path]:
    """Anchor day -> the directory holding the model's user and item embeddings as of that day: the held-out model's
    exports for the anchors from C on, the served model's (a refit) for S. Days without an export are absent."""
    wh = Warehouse.of(settings)
    found = {}
    for day in plan.embedded_days():
        directory = wh.model_dir(kind, version) if day == plan.serve else wh.anchor_embeddings(kind, version, day)
        if (directory / "user_embeddings.parquet").is_file() and (directory / "item_embeddings.parquet").is_file():
            found[day] = directory
    return found


def _vectors(table: pa.Table) -> np.ndarray:
    column = table.column("embedding").combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(table), -1)


def score_model_batches(
    batches: Iterator[pa.RecordBatch], shared: Any, kind: str, depth: int, levels: int
) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: each (anchor, user, embedding, candidate item ids) -> the model's top `depth` items with rank
    and score, and the score of every other candidate (rank null); GNOLR also gives P(k > c) per level boundary."""
    for batch in batches:
        if batch.num_rows == 0:
            continue
        frame = batch.to_pandas()
        for anchor, rows in frame.groupby("anchor", sort=False):
            item_ids, items, log_q, head = shared.value[anchor]
            index = {item: n for n, item in enumerate(item_ids)}
            users = np.stack(rows["embedding"].to_numpy()).astype(np.float32)
            best = top_k(*_scoring_space(kind, head, users, items, log_q), depth)
            columns, ranks = [], []
            for r, wanted in enumerate(rows["item_ids"].tolist()):
                chosen = best.items[r, : best.counts[r]]
                extra = np.setdiff1d(np.asarray([index[i] for i in wanted if i in index], np.int64), chosen)
                columns.append(np.concatenate([chosen, extra]))
                ranks.append(np.r_[np.arange(1, len(chosen) + 1), np.full(len(extra), np.nan)])
            cols = np.concatenate(columns)
            owner = np.repeat(np.arange(len(rows)), [len(c) for c in columns])
            dots = np.einsum("ij,ij->i", users[owner], items[cols]).astype(np.float64)
            out = {
                "anchor": pa.array([anchor] * len(cols), pa.date32()),
                "user_id": pa.array(rows["user_id"].to_numpy(dtype=object)[owner], pa.string()),
                "item_id": pa.array(np.asarray(item_ids, dtype=object)[cols], pa.string()),
                # null, not NaN, where the model did not propose the item: Spark tells the two apart
                f"rank__{kind}": pa.array(np.concatenate(ranks), pa.float64(), mask=np.isnan(np.concatenate(ranks))),
                f"score__{kind}": pa.array(_retrieval_score(kind, head, dots, log_q[cols]), pa.float64()),
            }
            if kind == "gnolr":
                p = level_probabilities(head, users[owner], items[cols]) if len(cols) else np.zeros((0, levels))
                for c in range(levels):
                    out[f"gnolr__p_above_{c}"] = pa.array(p[:, c].astype(np.float64), pa.float64())
            yield pa.RecordBatch.from_pydict(out)


def _retrieval_score(kind: str, head: dict[str, Any] | None, dots: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """A model's retrieval score: the inner product; GNOLR's on its logit scale with log q(item) added back."""
    return float(head["gamma"]) * dots + log_q if kind == "gnolr" and head else dots


def _scoring_space(
    kind: str, head: dict[str, Any] | None, users: np.ndarray, items: np.ndarray, log_q: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """User and item matrices whose inner product is `_retrieval_score` (the bias as one more dimension), so the top
    items come from the same kernel as every list: nightrec.scoring.top_k."""
    if kind != "gnolr" or not head:
        return users, items
    scaled = users * np.float32(head["gamma"])
    ones = np.ones((len(users), 1), np.float32)
    return np.hstack([scaled, ones]).astype(np.float32), np.hstack([items, log_q[:, None]]).astype(np.float32)


def model_source(
    spark: SparkSession, settings: Settings, plan: AnchorPlan, kind: str, version: str, proposed: DataFrame, levels: int
) -> DataFrame | None:
    """The model's candidates and scores on every anchor it has embeddings for (None when it has none)."""
    exports = model_embeddings(settings, plan, kind, version)
    if not exports:
        return None
    manifest = json.loads((Warehouse.of(settings).model_dir(kind, version) / "manifest.json").read_text())
    tables, user_frames = {}, []
    for day, directory in exports.items():
        item_table = pq.read_table(directory / "item_embeddings.parquet").sort_by("item_id")
        log_q = (
            np.asarray(item_table.column("log_q").to_numpy(), np.float64)
            if "log_q" in item_table.column_names
            else np.zeros(item_table.num_rows)
        )
        # the served model (S) and the held-out one (the anchors before) have heads of their own
        head = manifest.get("head") if day == plan.serve else manifest.get("evaluated_head", manifest.get("head"))
        if kind == "gnolr" and head is None:
            raise InputError(f"The {kind} model {version} has no head in its manifest: cannot score its candidates")
        tables[day] = (item_table.column("item_id").to_pylist(), _vectors(item_table), log_q, head)
        user_frames.append(
            spark.read.parquet(str(directory / "user_embeddings.parquet")).withColumn("anchor", F.lit(day))
        )
    users = user_frames[0]
    for more in user_frames[1:]:
        users = users.unionByName(more)
    wanted = proposed.groupBy("anchor", "user_id").agg(F.collect_set("item_id").alias("item_ids"))
    rows = users.join(wanted, ["anchor", "user_id"]).select("anchor", "user_id", "embedding", "item_ids")
    shared = spark.sparkContext.broadcast(tables)
    depth = settings.ranker.candidates_per_source
    schema = f"anchor date, user_id string, item_id string, rank__{kind} double, score__{kind} double"
    if kind == "gnolr":
        schema += "".join(f", gnolr__p_above_{c} double" for c in range(levels))
    return rows.mapInArrow(lambda it: score_model_batches(it, shared, kind, depth, levels), schema)


# ------------------------------------------------------------------------------------------------------ the table


def _wide(long: DataFrame, sources: list[str]) -> DataFrame:
    """One row per candidate: each source's rank and score, and the sources that proposed it."""
    aggregates = [F.array_sort(F.collect_set("source")).alias("sources")]
    for s in sources:
        aggregates.append(F.min(F.when(F.col("source") == s, F.col("rank"))).alias(f"rank__{s}"))
        aggregates.append(F.max(F.when(F.col("source") == s, F.col("score"))).alias(f"score__{s}"))
    return long.groupBy(*KEYS).agg(*aggregates)


def candidate_table(spark: SparkSession, settings: Settings, plan: AnchorPlan, version: str) -> DataFrame:
    """Every anchor's candidates with their features (columns: anchor, user_id, item_id, sources, features)."""
    adapter = load_adapter(settings.source)
    levels = adapter.max_level
    r = settings.ranker
    inputs = Inputs(spark, settings, plan, levels)
    history = inputs.history().cache()
    pairs = pair_features(inputs).cache()
    long = _empty_sources(spark)
    parts = {
        "history": lambda: history_source(pairs),
        "covisitation": lambda: covisitation_source(inputs, history, r.candidates_per_source),
        "transitions": lambda: transitions_source(inputs, history, r.candidates_per_source),
        "segment_popular": lambda: segment_popular_source(inputs, r.candidates_per_source),
    }
    for name, build in parts.items():
        if name in r.sources:
            long = long.unionByName(build())
    long = long.unionByName(popular_sources(inputs, r.sources, r.candidates_per_source, settings.topk.k))
    plain = [s for s in r.sources if s not in ranking.MODEL_SOURCES]
    table = _wide(long, plain).cache()
    for kind in (s for s in r.sources if s in ranking.MODEL_SOURCES):
        scored = model_source(spark, settings, plan, kind, version, table.select(*KEYS), levels)
        if scored is None:
            log(JOB, f"no {kind} embeddings of version {version}: its columns stay empty")
            continue
        table = table.join(scored, KEYS, "full_outer").withColumn(
            "sources",
            F.array_sort(
                F.concat(
                    F.coalesce(F.col("sources"), F.array().cast("array<string>")),
                    F.when(F.col(f"rank__{kind}").isNotNull(), F.array(F.lit(kind))).otherwise(
                        F.array().cast("array<string>")
                    ),
                )
            ),
        )
    table = table.where(F.size("sources") > 0)  # a model's score of an item nobody proposed is no candidate
    item_columns = [n.removeprefix("item__") for n in ranking.item_features(levels)]
    user_columns = [n.removeprefix("user__") for n in ranking.user_features(levels)]
    items = inputs.day_before(inputs.items).select(
        "anchor", "item_id", *[F.col(c).alias(f"item__{c}") for c in item_columns]
    )
    users = inputs.day_before(inputs.user_rows).select(
        "anchor", "user_id", *[F.col(c).alias(f"user__{c}") for c in user_columns]
    )
    table = (
        table.join(pairs, KEYS, "left")
        .join(items, ["anchor", "item_id"], "left")
        .join(users, ["anchor", "user_id"], "left")
        .withColumn("n_sources", F.size("sources"))
        .withColumn(
            "pair__purchase_due",
            F.col(f"pair__days_since_level_{levels}") / F.col("item__median_days_between_purchases_365d"),
        )
    )
    zero_when_absent = [
        n for n in ranking.pair_features(levels) if not n.startswith(("pair__days_since", "pair__purchase_due"))
    ]
    table = table.fillna(0, subset=zero_when_absent)
    table = exclusions(spark, settings, table, levels)
    names = ranking.feature_names(levels, r.sources)
    present = set(table.columns)
    return table.select(
        "anchor",
        "user_id",
        "item_id",
        "sources",
        *[(F.col(n) if n in present else F.lit(None)).cast("double").alias(n) for n in names],
    )


def exclusions(spark: SparkSession, settings: Settings, table: DataFrame, levels: int) -> DataFrame:
    """Never an item the source declares unavailable; no item the user bought before, when topk.exclude_bought."""
    if settings.topk.exclude_bought:
        table = table.where(F.col(f"pair__days_reaching_level_{levels}") == 0)
    if load_adapter(settings.source).has_availability:
        path = Warehouse.of(settings).bronze_item_attributes()
        gone = spark.read.parquet(str(path)).where(F.col("available") == F.lit(False)).select("item_id")
        table = table.join(F.broadcast(gone), "item_id", "left_anti")
    return table


def run(
    spark: SparkSession, settings: Settings, plan: AnchorPlan, version: str, out: Path | None = None
) -> dict[str, Any]:
    """Build and write the candidates of every anchor of `plan` (the embedding models of `version`)."""
    target = out or Warehouse.of(settings).candidates(plan.serve - timedelta(days=1))
    staging = fresh_staging(target)
    log(JOB, f"{len(plan.days())} anchors {plan.days()[0]}..{plan.days()[-1]}, sources {list(settings.ranker.sources)}")
    table = candidate_table(spark, settings, plan, version)
    table.repartition("anchor").sortWithinPartitions("anchor", "user_id", "item_id").write.partitionBy(
        "anchor"
    ).parquet(str(staging))
    counts = {
        str(row["anchor"]): {"users": int(row["users"]), "rows": int(row["rows"])}
        for row in spark.read.parquet(str(staging))
        .groupBy("anchor")
        .agg(F.countDistinct("user_id").alias("users"), F.count("*").alias("rows"))
        .collect()
    }
    summary = {"plan": plan.describe(), "model_version": version, "anchors": counts}
    write_json_atomic(staging / "_SUCCESS", summary)
    swap_into_place(staging, target)
    rows = sum(c["rows"] for c in counts.values())
    log(JOB, f"{rows:,} candidates over {len(counts)} anchors -> {target}")
    return {**summary, "path": str(target)}


def _nightly(job: JobRun) -> None:
    """The night's candidates for the range's last day (skipped, with the reason, while the history is too short)."""
    plan = plan_for(job.settings, load_adapter(job.settings.source).history_start, job.last_day)
    run(job.spark, job.settings, plan, job.last_day.isoformat())


def main(argv: list[str] | None = None) -> int:
    return run_job(JOB, __doc__, argv, _nightly)


if __name__ == "__main__":
    raise SystemExit(main())
