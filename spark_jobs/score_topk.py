"""Score and publish the top-k items of every eligible user for the day end - 1 (D), the lists services read.

``topk.model: ranker`` (the default): the candidates of D + 1 (spark_jobs/build_candidates.py) are grouped per user
and ranked inside Spark by the night's decision (training/ranker.py): the LightGBM ranker, or the best baseline's
list when the ranker did not beat it on the held-out window, through the kernel the evaluation and the tests run
(nightrec.ranking.rank_users, in `mapInArrow`). Each row says which sources proposed the item (`sources`) and, where
GNOLR scored it, P(highest level >= l) per level (`p_at_least`).

``topk.model: <model>``: the k items with the highest inner product between that model's champion's user and item
embeddings, computed blockwise inside Spark tasks (the item matrix is broadcast; each Arrow batch of users is one
float32 matmul and a partial sort: nightrec.scoring.top_k).

Either way ties go to the smaller item id; bought items are left out when `topk.exclude_bought` is set, unavailable
items where the source declares availability; users without a list (cold start) get the day's most popular items
(distinct users over 30 days, source = 'popular'), or, where the night judged it better (training.ranker.cold_start),
the items their consumer segment's members engaged with most (source = 'segment_popular') filled with those.
The version is written to serving/topk/ds=D/model=<name>-<version>/ beside its final place, checked (every
eligible user, exactly min(k, eligible items) rows each), renamed into place and then published by the pointer swap in
nightrec.topk_publish. Without a ranker decision or a champion (training skipped: the history is too short for the
windows the settings ask for) every user gets the popular list (version ``popular-<D>``), and the reason travels with
the version into the run report: a young shop still serves something.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from nightrec import ranking, topk_publish
from nightrec.adapters import load_adapter
from nightrec.config import ORDINAL_KINDS, Settings
from nightrec.errors import InputError, ReconciliationError
from nightrec.run_manifest import read_run_manifest
from nightrec.scoring import level_probabilities, top_k
from nightrec.storage import fresh_staging, read_json, swap_into_place, write_json_atomic
from nightrec.warehouse import Warehouse, champion
from spark_jobs.common import log, run_job
from spark_jobs.segment_items import SEGMENT_DAYS, members_by_anchor, top_segment_items

JOB = "score_topk"


def item_matrix(directory: Path) -> tuple[list[str], np.ndarray]:
    """The champion's item ids (sorted: the tie-break order) and their embeddings as one float32 matrix."""
    table = pq.read_table(directory / "item_embeddings.parquet").sort_by("item_id")
    column = table.column("embedding").combine_chunks()
    width = column.type.list_size
    matrix = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, width)
    return table.column("item_id").to_pylist(), matrix


def unavailable_ids(settings: Settings) -> set[str]:
    """Items the source declares unavailable (bronze/item_attributes.available = false); none unless it declares
    availability."""
    if not load_adapter(settings.source).has_availability:
        return set()
    path = Warehouse.of(settings).bronze_item_attributes()
    table = pq.read_table(path)
    if "available" not in table.column_names:
        raise InputError(f"The source declares availability but {path} has no 'available' column")
    return {i for i, a in zip(table["item_id"].to_pylist(), table["available"].to_pylist(), strict=True) if a is False}


def unavailable_items(settings: Settings, item_ids: list[str]) -> np.ndarray:
    """True where an item of `item_ids` is unavailable (the embedding job's mask over its catalogue)."""
    gone = unavailable_ids(settings)
    return np.array([i in gone for i in item_ids], dtype=bool)


def output_schema(ordinal: bool) -> str:
    schema = (
        "user_id string, rank int, item_id string, score float, source string, sources array<string>, "
        "model_version string"
    )
    return schema + (", p_at_least array<float>" if ordinal else "")


def score_batches(
    batches: Iterator[pa.RecordBatch], shared: Any, k: int, model: str, model_version: str, head: dict[str, Any] | None
) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: each batch of users (user_id, embedding, bought item ids) -> their ranked rows."""
    item_ids, items, unavailable = shared.value
    index = {item: n for n, item in enumerate(item_ids)}
    item_ids = np.asarray(item_ids, dtype=object)
    for batch in batches:
        if batch.num_rows == 0:
            continue
        embedding = batch.column("embedding")
        users = embedding.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(batch.num_rows, -1)
        bought = [
            np.asarray([index[i] for i in ids or [] if i in index], dtype=np.int64)
            for ids in batch.column("bought_ids").to_pylist()
        ]
        best = top_k(users, items, k, bought, unavailable)
        rows = np.repeat(np.arange(batch.num_rows), best.counts)
        valid = np.arange(best.items.shape[1])[None, :] < best.counts[:, None]
        chosen = best.items[valid]
        columns: dict[str, pa.Array] = {
            "user_id": pa.array(np.asarray(batch.column("user_id").to_pylist(), dtype=object)[rows], pa.string()),
            "rank": pa.array(np.concatenate([np.arange(1, c + 1) for c in best.counts]), pa.int32())
            if len(rows)
            else pa.array([], pa.int32()),
            "item_id": pa.array(item_ids[chosen], pa.string()),
            "score": pa.array(best.scores[valid], pa.float32()),
            "source": pa.array(["model"] * len(rows), pa.string()),
            "sources": pa.array([[model]] * len(rows), pa.list_(pa.string())),
            "model_version": pa.array([model_version] * len(rows), pa.string()),
        }
        if head is not None:
            probabilities = level_probabilities(head, users[rows], items[chosen])
            columns["p_at_least"] = pa.array(list(probabilities), pa.list_(pa.float32()))
        yield pa.RecordBatch.from_pydict(columns)


def rank_batches(
    batches: Iterator[pa.RecordBatch], scorer: ranking.Scorer, k: int, levels: int, model_version: str, source: str
) -> Iterator[pa.RecordBatch]:
    """mapInArrow body of the ranked lists: each batch of users with their candidates -> their k best rows, ranked by
    nightrec.ranking.rank_users (the kernel training's evaluation runs)."""
    for batch in batches:
        if batch.num_rows == 0:
            continue
        ranked = ranking.rank_users(batch, scorer, k, levels)
        n = ranked.num_rows
        out = ranked.append_column("source", pa.array([source] * n, pa.string())).append_column(
            "model_version", pa.array([model_version] * n, pa.string())
        )
        if "p_at_least" not in out.column_names:
            out = out.append_column("p_at_least", pa.array([None] * n, pa.list_(pa.float32())))
        yield from out.select(RANKED_COLUMNS).to_batches()


RANKED_COLUMNS = ["user_id", "rank", "item_id", "score", "source", "sources", "model_version", "p_at_least"]


def _parquet(spark: SparkSession, settings: Settings, mart: str) -> DataFrame:
    return spark.read.parquet(str(Warehouse.of(settings).mart_export(mart)))


FALLBACK_SOURCES = ("segment_popular", "popular")  # the `source` of a list that is no personal one


def _segment_items(spark: SparkSession, settings: Settings, day: date, depth: int) -> DataFrame | None:
    """(user_id, item_id, score): for every user of a segmentation the lists of day + 1 may read, the `depth` items
    most members of their segment engaged with over the 30 days through `day` (spark_jobs/segment_items.py)."""
    serve = day + timedelta(days=1)
    members = members_by_anchor(spark, settings, [serve])
    if members is None:
        return None
    recent = (
        _parquet(spark, settings, "user_item_features")
        .where((F.col("ds") < F.lit(serve)) & (F.col("ds") >= F.lit(serve - timedelta(days=SEGMENT_DAYS))))
        .select(F.lit(serve).alias("anchor"), "user_id", "item_id")
    )
    top = top_segment_items(recent, members, depth)
    return members.join(top, ["anchor", "segment_id"]).select(
        "user_id", "item_id", F.col("n_members").cast("float").alias("score")
    )


def _popular_fallback(
    spark: SparkSession,
    settings: Settings,
    day: date,
    cold: DataFrame,
    bought: DataFrame,
    model_version: str,
    ordinal: bool,
    gone: list[str] | None = None,
    segments: bool = False,
) -> DataFrame:
    """The list of users without a personal one: with `segments` (the night judged the segment-popular list better
    than the popular one: training.ranker.cold_start) first the items most engaged with by their consumer segment's
    members (source ``segment_popular``) where the user is in a segmentation the day may read; then the day's most
    popular items (distinct users over 30 days; source ``popular``) to fill k; never an item in `gone`
    (unavailable) or one the user bought (when excluded)."""
    gone = gone if gone is not None else sorted(unavailable_ids(settings))
    popular = (
        _parquet(spark, settings, "item_features")
        .where(F.col("ds") == F.lit(day))
        .where(~F.col("item_id").isin(gone) if gone else F.lit(True))
        .select("item_id", F.col("n_users_30d").cast("float").alias("score"), "n_events_30d")
    )
    # Enough popular items that every user keeps k after their own purchases are removed.
    most_bought = bought.select(F.max(F.size("bought_ids"))).first()[0] or 0
    depth = settings.topk.k + most_bought
    head = popular.orderBy(F.desc("score"), F.desc("n_events_30d"), "item_id").limit(depth)
    offered = cold.crossJoin(F.broadcast(head)).select(
        "user_id", "item_id", "score", "n_events_30d", F.lit(1).alias("tier"), F.lit("popular").alias("source")
    )
    segment_items = _segment_items(spark, settings, day, depth) if segments else None
    if segment_items is not None:
        segment_items = segment_items.join(cold, "user_id").where(~F.col("item_id").isin(gone) if gone else F.lit(True))
        offered = offered.unionByName(
            segment_items.select(
                "user_id",
                "item_id",
                "score",
                F.lit(None).cast("bigint").alias("n_events_30d"),
                F.lit(0).alias("tier"),
                F.lit("segment_popular").alias("source"),
            )
        )
        # an item both lists offer keeps its segment place
        first = Window.partitionBy("user_id", "item_id").orderBy("tier")
        offered = offered.withColumn("copy", F.row_number().over(first)).where(F.col("copy") == 1).drop("copy")
    ranked = (
        offered.join(bought, "user_id", "left")
        .where(F.col("bought_ids").isNull() | ~F.array_contains(F.col("bought_ids"), F.col("item_id")))
        .withColumn(
            "rank",
            F.row_number().over(
                Window.partitionBy("user_id").orderBy(
                    "tier", F.desc("score"), F.desc_nulls_last("n_events_30d"), "item_id"
                )
            ),
        )
        .where(F.col("rank") <= settings.topk.k)
        .select(
            "user_id",
            F.col("rank").cast("int"),
            "item_id",
            "score",
            "source",
            F.when(F.col("source") == "popular", F.array(F.lit("popular_30d")))
            .otherwise(F.array(F.lit("segment_popular")))
            .alias("sources"),
            F.lit(model_version).alias("model_version"),
        )
    )
    if ordinal:
        ranked = ranked.withColumn("p_at_least", F.lit(None).cast("array<float>"))
    return ranked


def run(spark: SparkSession, settings: Settings, day: date) -> dict[str, Any]:
    """Score, check, write and publish the top-k of day ``day``; returns the counts (or why nothing was done)."""
    if settings.topk.model == "ranker":
        return run_ranked(spark, settings, day)
    return run_single_model(spark, settings, day)


def _users(spark: SparkSession, settings: Settings, day: date) -> DataFrame:
    """Every user known to the warehouse on `day`: who must get a list."""
    return (
        _parquet(spark, settings, "dim_users").where(F.col("first_event_ds") <= F.lit(day)).select("user_id").distinct()
    )


def _bought(spark: SparkSession, settings: Settings, day: date) -> DataFrame:
    """user_id, bought_ids: the items each user bought through `day`, when topk.exclude_bought (else no rows)."""
    if not settings.topk.exclude_bought:
        return spark.createDataFrame([], "user_id string, bought_ids array<string>")
    buyers = F.lit(load_adapter(settings.source).max_level)
    return (
        _parquet(spark, settings, "fct_interactions")
        .where((F.col("ds") <= F.lit(day)) & (F.col("max_level_reached") == buyers))
        .groupBy("user_id")
        .agg(F.sort_array(F.collect_set("item_id")).alias("bought_ids"))
    )


def run_ranked(spark: SparkSession, settings: Settings, day: date) -> dict[str, Any]:
    """The night's decision applied to the candidates of day + 1: the ranker's lists or the best baseline's."""
    wh = Warehouse.of(settings)
    decision = ranking.night_decision(wh, day)
    candidates = wh.candidates(day) / f"anchor={(day + timedelta(days=1)).isoformat()}"
    if decision is None or not candidates.is_dir():
        return _popular_for_everyone(spark, settings, day, f"no ranker decision or candidates for {day}")
    lists = decision["lists"]
    if lists == "ranker":
        version = decision["ranker_version"]
        scorer: ranking.Scorer = ranking.BoosterScorer(ranking.served_booster(wh, version))
    else:
        version, scorer = day.isoformat(), ranking.baseline_scorer(lists)
    model_version = f"{lists}-{version}"
    levels = load_adapter(settings.source).max_level
    k = settings.topk.k
    log(JOB, f"{day}: {model_version} ({decision['reason']}), k = {k}")
    table = spark.read.parquet(str(candidates))
    fields = [c for c in table.columns if c not in ("user_id", "anchor")]
    grouped = table.groupBy("user_id").agg(F.collect_list(F.struct(*fields)).alias("candidates"))
    ranked_schema = output_schema(True)
    scored = grouped.mapInArrow(lambda it: rank_batches(it, scorer, k, levels, model_version, lists), ranked_schema)
    users, bought = _users(spark, settings, day), _bought(spark, settings, day)
    counts_per_user = table.groupBy("user_id").agg(F.count("*").alias("n_candidates"))
    cold = users.join(counts_per_user, "user_id", "left_anti")
    segments = decision.get("cold_start") == "segment_popular"
    fallback = _popular_fallback(spark, settings, day, cold, bought, model_version, True, segments=segments)
    expected = users.join(counts_per_user, "user_id", "left").select(
        "user_id", F.least(F.lit(k), F.coalesce("n_candidates", F.lit(0))).alias("want")
    )
    extra = {"lists": lists, "reason": decision["reason"], "k": k, "exclude_bought": settings.topk.exclude_bought}
    return _write_and_publish(spark, settings, day, model_version, scored.unionByName(fallback), expected, extra)


def run_single_model(spark: SparkSession, settings: Settings, day: date) -> dict[str, Any]:
    """The configured model's champion's lists over its whole catalogue."""
    model, wh = settings.topk.model, Warehouse.of(settings)
    pointer = champion(wh, model)
    if pointer is None:
        return _popular_for_everyone(spark, settings, day, f"no published {model} model yet")
    directory = wh.model_dir(model, pointer["version"])
    manifest = read_json(directory / "manifest.json")
    model_version = f"{model}-{manifest['version']}"
    head = manifest.get("head") if model in ORDINAL_KINDS else None
    k = settings.topk.k
    item_ids, items = item_matrix(directory)
    unavailable = unavailable_items(settings, item_ids)
    log(JOB, f"{day}: {model_version}, {len(item_ids):,} items x dim {items.shape[1]}, k = {k}")
    users, bought = _users(spark, settings, day), _bought(spark, settings, day)
    shared = spark.sparkContext.broadcast((item_ids, items, unavailable))
    embeddings = spark.read.parquet(str(directory / "user_embeddings.parquet"))
    with_embedding = (
        users.join(embeddings, "user_id").join(bought, "user_id", "left").select("user_id", "embedding", "bought_ids")
    )
    scored = with_embedding.mapInArrow(
        lambda batches: score_batches(batches, shared, k, model, model_version, head),
        output_schema(head is not None),
    )
    cold = users.join(embeddings.select("user_id"), "user_id", "left_anti")
    gone = [i for i, u in zip(item_ids, unavailable, strict=True) if u]
    segments = (ranking.night_decision(wh, day) or {}).get("cold_start") == "segment_popular"
    fallback = _popular_fallback(spark, settings, day, cold, bought, model_version, head is not None, gone, segments)
    catalogue = spark.createDataFrame(
        [(i,) for i, out in zip(item_ids, unavailable, strict=True) if not out], "item_id string"
    )
    bought_in_catalogue = (
        bought.select("user_id", F.explode("bought_ids").alias("item_id"))
        .join(catalogue, "item_id")
        .groupBy("user_id")
        .agg(F.count("*").alias("n_bought"))
    )
    eligible = F.lit(catalogue.count()) - F.coalesce("n_bought", F.lit(0))
    expected = users.join(bought_in_catalogue, "user_id", "left").select(
        "user_id", F.least(F.lit(k), eligible).alias("want")
    )
    extra = {"k": k, "items": len(item_ids), "exclude_bought": settings.topk.exclude_bought}
    return _write_and_publish(spark, settings, day, model_version, scored.unionByName(fallback), expected, extra)


def _popular_for_everyone(spark: SparkSession, settings: Settings, day: date, why: str) -> dict[str, Any]:
    """The popular list for every user, published when the night has no model to rank with (``why``); the reason,
    with the training's own (which names the settings that decide it), goes into the version's counts."""
    trained = (read_run_manifest(Warehouse.of(settings), day) or {}).get("stages", {}).get("training") or {}
    reason = f"{why}: {trained['skipped']}" if "skipped" in trained else f"{why} (see the night's training log)"
    log(JOB, f"{day}: publishing the popular list for every user; {reason}")
    model_version = f"popular-{day.isoformat()}"
    users, bought = _users(spark, settings, day), _bought(spark, settings, day)
    ordinal = settings.topk.model == "ranker" or settings.topk.model in ORDINAL_KINDS  # the schema of its other lists
    lists = _popular_fallback(spark, settings, day, users, bought, model_version, ordinal)
    expected = users.select("user_id", F.lit(settings.topk.k).alias("want"))  # fewer only where the day has fewer
    extra = {"lists": "popular", "reason": reason, "k": settings.topk.k, "exclude_bought": settings.topk.exclude_bought}
    return _write_and_publish(spark, settings, day, model_version, lists, expected, extra)


def _write_and_publish(
    spark: SparkSession,
    settings: Settings,
    day: date,
    model_version: str,
    table: DataFrame,
    expected: DataFrame,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Write the version beside its place, check it, rename it into place and move the pointer."""
    target = topk_publish.version_dir(settings, day, model_version)
    staging = fresh_staging(target)  # after removing what a killed run of this version left
    partitions = int(spark.conf.get("spark.sql.shuffle.partitions"))
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(settings.topk.users_per_batch))
    try:
        table.repartition(partitions, "user_id").sortWithinPartitions("user_id", "rank").write.parquet(str(staging))
        counts = check_version(spark, staging, expected)
    except BaseException:  # a version that fails its check is never published: the previous lists stay served
        shutil.rmtree(staging, ignore_errors=True)
        raise
    counts.update({"model_version": model_version, **extra})
    write_json_atomic(staging / "_SUCCESS", counts)
    swap_into_place(staging, target)
    pointer = topk_publish.publish(settings, day, model_version, counts)
    log(JOB, f"{day}: {counts['rows']:,} rows for {counts['users']:,} users -> {target} (current: {pointer['path']})")
    return {**counts, "path": str(target), "current": pointer["path"]}


def check_version(spark: SparkSession, written: Path, expected: DataFrame) -> dict[str, Any]:
    """Every eligible user (``expected``: user_id, want) has exactly `want` rows with ranks 1..n; raise before
    publishing if not. Users on the popular fallback may have fewer (a small catalogue day offers fewer items)."""
    out = spark.read.parquet(str(written))
    per_user = out.groupBy("user_id").agg(
        F.count("*").alias("n"),
        F.max("rank").alias("max_rank"),
        F.sum(F.col("source").isin(*FALLBACK_SOURCES).cast("int")).alias("popular"),
    )
    joined = expected.join(per_user, "user_id", "full_outer")
    bad = joined.where(
        F.col("want").isNull() | (F.coalesce("n", F.lit(0)) != F.col("want")) | (F.col("max_rank") != F.col("n"))
    )
    bad = bad.where(~((F.col("popular") == F.col("n")) & (F.col("n") > 0) & (F.col("max_rank") == F.col("n"))))
    problems = bad.limit(5).collect()
    totals = joined.agg(
        F.count("n").alias("users"),
        F.sum("n").alias("rows"),
        F.sum(F.when(F.col("popular") > 0, 1).otherwise(0)).alias("cold_start_users"),
        F.count("want").alias("eligible_users"),
    ).first()
    if problems:
        raise ReconciliationError(
            "top-k check failed (want = min(k, eligible items) rows per eligible user, ranks 1..n): "
            + "; ".join(json.dumps(r.asDict(), default=str) for r in problems)
        )
    return {
        "users": int(totals["users"] or 0),
        "eligible_users": int(totals["eligible_users"] or 0),
        "rows": int(totals["rows"] or 0),
        "cold_start_users": int(totals["cold_start_users"] or 0),
    }


def main(argv: list[str] | None = None) -> int:
    return run_job(JOB, __doc__, argv, lambda job: run(job.spark, job.settings, job.last_day))


if __name__ == "__main__":
    raise SystemExit(main())
