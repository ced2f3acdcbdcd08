"""Segments: the night's consumer embeddings -> segments/{membership,profiles,centroids}/ds=D/ (UNICON's segments).

For night D (the range's last day) the job reads ``models/consumer_encoder/<D>/user_embeddings.parquet`` and
- clusters the consumers with Spark MLlib's k-means, k chosen by silhouette over [segments.k_min, segments.k_max]
  (or fixed by segments.k), the chosen k's clustering the best of segments.kmeans_starts seeded starts (the lowest
  sum of squares), or, on a later night, continued from the previous night's centroids (segments.keep_margin);
- keeps segment ids from night to night: the centroids are matched to those of the latest earlier night one to one
  (nightrec.segments.match_segments); a segment without a partner gets a new id;
- measures stability as the adjusted Rand index between the two nights' segments of the consumers in both;
- profiles each segment against everyone: size, mean events and active days, the share that reached the top level,
  days since the last event, the share of events per level, and the items most over-represented among its consumers'
  recent items (lift = share of the segment's consumers who touched the item / share of all consumers who did, with
  counts; an item needs segments.min_item_users of the segment), and a short automatic label.

    membership   user_id, segment_id, distance (to the segment's centroid), ds
    profiles     segment_id, label, consumers, share, mean_events, mean_active_days, top_level_share, recency_days,
                 level_shares, top_items (item_id, name, consumers, share, lift), ds
    centroids    segment_id, centroid, ds

Each table's partition is staged beside it and renamed into place; rerunning a night gives the same tables (a fixed
seed, and matching against the nights before it only). A night without embeddings (segments off, or the encoder had
nothing to embed) is skipped with its reason.

    spark-submit spark_jobs/build_segments.py --source tmall_brand --start 2014-08-14 --end 2014-08-15
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from nightrec import segments
from nightrec.adapters import load_adapter
from nightrec.errors import HistoryTooShort
from nightrec.run_manifest import update_run_manifest
from nightrec.storage import SUCCESS_FILE, read_json
from nightrec.warehouse import Warehouse, complete_nights, partition
from spark_jobs.build_sequences import latest_state
from spark_jobs.common import JobRun, log, prepare_table, publish_partitions, run_job, write_partitioned

JOB = "build_segments"
TABLES = ("membership", "profiles", "centroids")


def previous_night(wh: Warehouse, night: date) -> date | None:
    """The latest night before ``night`` whose segments are complete (its centroids carry the ids to keep)."""
    nights = complete_nights(wh.segments("centroids"), before=night)
    return nights[-1] if nights else None


def assign(spark: SparkSession, embeddings: DataFrame, centers: np.ndarray) -> DataFrame:
    """Each consumer's nearest centre: user_id, features, cluster (the centre's row), distance (Euclidean)."""
    from pyspark.ml.functions import vector_to_array

    lookup = spark.createDataFrame(
        [(c, [float(x) for x in centers[c]]) for c in range(len(centers))], "cluster int, centroid array<double>"
    )
    squares = F.zip_with(vector_to_array("features"), "centroid", lambda a, b: (a - b) * (a - b))
    crossed = embeddings.crossJoin(F.broadcast(lookup)).withColumn(
        "d2", F.aggregate(squares, F.lit(0.0), lambda acc, x: acc + x)
    )
    nearest = crossed.groupBy("user_id").agg(
        F.min_by("cluster", F.struct("d2", "cluster")).alias("cluster"), F.min("d2").alias("d2")
    )
    return embeddings.join(nearest, "user_id").select(
        "user_id", "features", "cluster", F.sqrt(F.greatest("d2", F.lit(0.0))).alias("distance")
    )


def silhouette(assigned: DataFrame) -> float:
    from pyspark.ml.evaluation import ClusteringEvaluator

    evaluator = ClusteringEvaluator(featuresCol="features", predictionCol="cluster", metricName="silhouette")
    return float(evaluator.evaluate(assigned))


def kmeans(embeddings: DataFrame, k: int, seed: int) -> tuple[np.ndarray, float]:
    """One k-means (MLlib, a k-means|| start drawn with ``seed``): its centres and its within-segment sum of squares."""
    from pyspark.ml.clustering import KMeans

    model = KMeans(k=k, seed=seed, featuresCol="features", predictionCol="cluster", maxIter=50).fit(embeddings)
    return np.array(model.clusterCenters(), dtype=np.float64), float(model.summary.trainingCost)


def fresh(embeddings: DataFrame, ks: list[int], seed: int) -> dict[int, tuple[np.ndarray, float]]:
    """k-means for every k of ``ks`` (one start each): the centres and the sum of squares of each."""
    return {k: kmeans(embeddings, k, seed) for k in ks}


@dataclass(frozen=True)
class Starts:
    """Several k-means starts of one k: the winner's ``centers``, which start won (0-based) and every start's
    within-segment sum of squares."""

    centers: np.ndarray
    start: int
    costs: list[float]


def best_start(embeddings: DataFrame, k: int, seed: int, starts: int, first: tuple[np.ndarray, float]) -> Starts:
    """The lowest sum of squares of ``starts`` k-means starts of one k (seeds seed, seed + 1, ...; ``first`` is the
    start of ``seed``, already run); a tie goes to the earlier start."""
    runs = [first, *(kmeans(embeddings, k, seed + i) for i in range(1, starts))]
    costs = [cost for _, cost in runs]
    chosen = min(range(len(runs)), key=lambda i: (costs[i], i))
    return Starts(centers=runs[chosen][0], start=chosen, costs=costs)


def continued(embeddings: DataFrame, previous: np.ndarray, seed: int) -> np.ndarray:
    """k-means (MLlib) started from the previous night's centres: centre i stays segment i's."""
    from pyspark.mllib.clustering import KMeans, KMeansModel
    from pyspark.mllib.linalg import Vectors

    vectors = embeddings.select("features").rdd.map(lambda r: Vectors.dense(r.features.toArray()))
    initial = KMeansModel([Vectors.dense(c) for c in previous])
    model = KMeans.train(vectors, len(previous), maxIterations=50, seed=seed, initialModel=initial)
    return np.array([np.asarray(c, dtype=np.float64) for c in model.clusterCenters])


def stability(spark: SparkSession, wh: Warehouse, before: date, membership: DataFrame) -> tuple[float, int]:
    """(ARI between the two nights' segments of the consumers in both, how many they are)."""
    earlier = spark.read.parquet(str(partition(wh.segments("membership"), before))).select(
        "user_id", F.col("segment_id").alias("before")
    )
    pairs = earlier.join(membership.select("user_id", "segment_id"), "user_id").groupBy("before", "segment_id").count()
    rows = pairs.collect()
    if not rows:
        return float("nan"), 0
    before_ids = sorted({r["before"] for r in rows})
    after_ids = sorted({r["segment_id"] for r in rows})
    table = np.zeros((len(before_ids), len(after_ids)), dtype=np.int64)
    for r in rows:
        table[before_ids.index(r["before"]), after_ids.index(r["segment_id"])] = r["count"]
    return segments.adjusted_rand_index(table), int(table.sum())


def item_names(spark: SparkSession, wh: Warehouse) -> DataFrame | None:
    """item_id -> the name a label uses: the finest category the source has (subcategory, category), else the item's
    name; None when the source has no item attributes (labels then name the items)."""
    root = wh.bronze_item_attributes()
    if not any(root.glob("*.parquet")):
        return None
    attrs = spark.read.parquet(str(root))
    columns = [c for c in ("subcategory", "category", "item_name") if c in attrs.columns]
    if not columns:
        return None
    return attrs.select("item_id", F.coalesce(*[F.col(c).cast("string") for c in columns]).alias("name"))


def profiles(
    spark: SparkSession,
    wh: Warehouse,
    membership: DataFrame,
    night: date,
    levels: int,
    top_items: int,
    min_users: int,
) -> list[dict[str, Any]]:
    """One profile per segment (a dict per row of the profiles table, without ds); ``levels``: the source's
    behaviour levels, the highest of which (a purchase) gives top_level_share."""
    silver = spark.read.option("basePath", str(wh.silver_sequences())).parquet(str(wh.silver_sequences()))
    state = latest_state(silver.where(F.col("ds") <= F.lit(night)))
    people = (
        membership.join(state, "user_id")
        .select(
            "user_id",
            "segment_id",
            F.col("events_total").cast("double").alias("events"),
            F.col("active_days").cast("double").alias("active_days"),
            (F.col("max_level") >= levels).cast("double").alias("top"),
            F.datediff(F.lit(night), F.to_date("last_event_ts")).cast("double").alias("recency"),
            *[F.coalesce(F.col("level_counts")[i], F.lit(0)).cast("double").alias(f"l{i + 1}") for i in range(levels)],
            F.array_distinct("seq_item_ids").alias("items"),
        )
        .cache()
    )
    stats = [
        F.count("*").alias("consumers"),
        F.avg("events").alias("mean_events"),
        F.avg("active_days").alias("mean_active_days"),
        F.avg("top").alias("top_level_share"),
        F.avg("recency").alias("recency_days"),
        *[F.sum(f"l{i + 1}").alias(f"l{i + 1}") for i in range(levels)],
    ]
    everyone = people.agg(*stats).collect()[0].asDict()
    per_segment = {r["segment_id"]: r.asDict() for r in people.groupBy("segment_id").agg(*stats).collect()}

    touched = people.select("segment_id", F.explode("items").alias("item_id"))
    item_users = touched.groupBy("item_id").agg(F.count("*").alias("item_consumers"))
    sizes = people.groupBy("segment_id").agg(F.count("*").alias("size"))
    lifted = (
        touched.groupBy("segment_id", "item_id")
        .agg(F.count("*").alias("consumers"))
        .where(F.col("consumers") >= min_users)
        .join(item_users, "item_id")
        .join(sizes, "segment_id")
        .withColumn("share", F.col("consumers") / F.col("size"))
        .withColumn("lift", F.col("share") / (F.col("item_consumers") / F.lit(everyone["consumers"])))
    )
    names = item_names(spark, wh)
    lifted = lifted.join(names, "item_id", "left") if names is not None else lifted.withColumn("name", F.lit(None))
    ranked = (
        lifted.withColumn(
            "_rank",
            F.row_number().over(
                Window.partitionBy("segment_id").orderBy(F.col("lift").desc(), F.col("consumers").desc(), "item_id")
            ),
        )
        .where(F.col("_rank") <= top_items)
        .orderBy("segment_id", "_rank")
        .collect()
    )
    items: dict[int, list[dict[str, Any]]] = {}
    for r in ranked:
        items.setdefault(r["segment_id"], []).append(
            {
                "item_id": r["item_id"],
                "name": r["name"],
                "consumers": int(r["consumers"]),
                "share": float(r["share"]),
                "lift": float(r["lift"]),
            }
        )

    def behaviour(s: dict[str, Any]) -> segments.Behaviour:
        return segments.Behaviour(s["mean_events"], s["top_level_share"], s["recency_days"])

    population = behaviour(everyone)
    out = []
    for segment_id in sorted(per_segment):
        s = per_segment[segment_id]
        total = sum(s[f"l{i + 1}"] for i in range(levels))
        top = items.get(segment_id, [])
        tags = segments.behaviour_tags(behaviour(s), population)
        out.append(
            {
                "segment_id": int(segment_id),
                "label": segments.label([t["name"] or f"item {t['item_id']}" for t in top], tags),
                "consumers": int(s["consumers"]),
                "share": s["consumers"] / everyone["consumers"],
                "mean_events": float(s["mean_events"]),
                "mean_active_days": float(s["mean_active_days"]),
                "top_level_share": float(s["top_level_share"]),
                "recency_days": float(s["recency_days"]),
                "level_shares": [s[f"l{i + 1}"] / total if total else 0.0 for i in range(levels)],
                "top_items": top,
            }
        )
    people.unpersist()
    return out


PROFILE_SCHEMA = T.StructType(
    [
        T.StructField("segment_id", T.IntegerType(), False),
        T.StructField("label", T.StringType(), False),
        T.StructField("consumers", T.LongType(), False),
        T.StructField("share", T.DoubleType(), False),
        T.StructField("mean_events", T.DoubleType(), False),
        T.StructField("mean_active_days", T.DoubleType(), False),
        T.StructField("top_level_share", T.DoubleType(), False),
        T.StructField("recency_days", T.DoubleType(), False),
        T.StructField("level_shares", T.ArrayType(T.DoubleType()), False),
        T.StructField(
            "top_items",
            T.ArrayType(
                T.StructType(
                    [
                        T.StructField("item_id", T.StringType()),
                        T.StructField("name", T.StringType()),
                        T.StructField("consumers", T.LongType()),
                        T.StructField("share", T.DoubleType()),
                        T.StructField("lift", T.DoubleType()),
                    ]
                )
            ),
            False,
        ),
    ]
)


def run(job: JobRun) -> dict[str, Any]:
    """Build the segments of the range's last night; return the summary recorded in its run manifest."""
    from pyspark.ml.functions import array_to_vector

    started = time.time()
    settings, night = job.settings, job.last_day
    config = settings.segments
    adapter = load_adapter(settings.source)
    wh = Warehouse.of(settings)
    source = wh.consumer_embeddings(night)
    if not config.enabled:
        raise HistoryTooShort("segments.enabled is off")
    if not source.is_file():
        raise HistoryTooShort(f"no consumer embeddings for {night} ({source}): the encoder did not run that night")
    spark = job.spark
    embeddings = spark.read.parquet(str(source)).select("user_id", array_to_vector("embedding").alias("features"))
    embeddings = embeddings.orderBy("user_id").cache()  # a fixed order: k-means' seeded init sees the same rows
    n = embeddings.count()
    ks = [config.k] if config.k else list(range(config.k_min, min(config.k_max, n - 1) + 1))
    if n < 3 or not ks or max(ks) >= n:
        raise HistoryTooShort(f"{n} consumers cannot form {ks or config.k_min} segments")
    log(JOB, f"{adapter.name} night {night}: {n:,} consumers, k in {ks}")
    seed = settings.training.seed
    candidates: dict[str, tuple[np.ndarray, DataFrame, float]] = {}
    firsts = fresh(embeddings, ks, seed)
    for k, (centers, _) in firsts.items():
        t = time.time()
        assigned = assign(spark, embeddings, centers).cache()
        candidates[f"k={k}"] = (centers, assigned, silhouette(assigned))
        log(JOB, f"fresh k={k}: silhouette {candidates[f'k={k}'][2]:.4f} ({time.time() - t:.1f}s)")
    chosen_k = segments.choose_k({int(name[2:]): v[2] for name, v in candidates.items()})
    best_fresh = f"k={chosen_k}"
    starts = best_start(embeddings, chosen_k, seed, config.kmeans_starts, firsts[chosen_k])
    first_silhouette = candidates[best_fresh][2]  # the score that chose k
    if starts.start != 0:
        candidates[best_fresh][1].unpersist()
        assigned = assign(spark, embeddings, starts.centers).cache()
        candidates[best_fresh] = (starts.centers, assigned, silhouette(assigned))
    log(
        JOB,
        f"fresh k={chosen_k}: start {starts.start + 1} of {len(starts.costs)} has the lowest sum of squares "
        f"({min(starts.costs):.2f}; first start {starts.costs[0]:.2f}), "
        f"silhouette {candidates[best_fresh][2]:.4f}",
    )

    before = previous_night(wh, night)
    old_ids: list[int] = []
    next_id = 0
    if before is not None:
        done = read_json(partition(wh.segments("centroids"), before) / SUCCESS_FILE)
        next_id = int(done.get("next_id", 0))
        old = spark.read.parquet(str(partition(wh.segments("centroids"), before))).orderBy("segment_id").collect()
        old_ids = [r["segment_id"] for r in old]
        old_centers = np.array([r["centroid"] for r in old], dtype=np.float64)
        same_frame = old_centers.shape[1] == candidates[best_fresh][0].shape[1]
        if same_frame and len(old_centers) < n and (not config.k or config.k == len(old)):
            kept = continued(embeddings, old_centers, seed)
            assigned = assign(spark, embeddings, kept).cache()
            candidates["continued"] = (kept, assigned, silhouette(assigned))
            log(JOB, f"continued from {before} (k={len(old)}): silhouette {candidates['continued'][2]:.4f}")
    keep = "continued" in candidates and candidates["continued"][2] >= candidates[best_fresh][2] - config.keep_margin
    chosen = "continued" if keep else best_fresh
    centers, assigned, chosen_silhouette = candidates[chosen]
    k = len(centers)
    if keep:
        ids = old_ids
    else:
        previous_centers = old_centers if before is not None else None
        ids = segments.match_segments(centers, previous_centers, old_ids, next_id)
    next_id = max([next_id, *[i + 1 for i in ids]])
    for name, (_, frame, _) in candidates.items():
        if name != chosen:
            frame.unpersist()

    lookup = spark.createDataFrame(
        [(c, ids[c], [float(x) for x in centers[c]]) for c in range(k)],
        "cluster int, segment_id int, centroid array<double>",
    )
    membership = (
        assigned.join(F.broadcast(lookup.select("cluster", "segment_id")), "cluster")
        .select("user_id", "segment_id", "distance", F.lit(night).alias("ds"))
        .cache()
    )
    ari, common = stability(spark, wh, before, membership) if before is not None else (float("nan"), 0)
    rows = profiles(spark, wh, membership, night, adapter.max_level, config.profile_items, config.min_item_users)
    sizes = {r["segment_id"]: r["consumers"] for r in rows}
    summary: dict[str, Any] = {
        "job": JOB,
        "night": night.isoformat(),
        "consumers": n,
        "k": k,
        "clustering": chosen,
        "chosen_by": "continued" if keep else ("fixed" if config.k else "silhouette"),
        "silhouettes": {name: round(v[2], 6) for name, v in candidates.items()},
        "fresh_starts": {
            "k": chosen_k,
            "chosen": starts.start,
            "costs": [round(c, 6) for c in starts.costs],
            "first_silhouette": round(first_silhouette, 6),
        },
        "silhouette": round(chosen_silhouette, 6),
        "previous_night": before.isoformat() if before else None,
        "kept_ids": sorted(set(ids) & set(old_ids)),
        "next_id": next_id,
        "ari": None if np.isnan(ari) else round(ari, 6),
        "common_consumers": common,
        "sizes": {str(key): value for key, value in sorted(sizes.items())},
        "labels": {str(r["segment_id"]): r["label"] for r in rows},
    }
    profile_frame = spark.createDataFrame(rows, PROFILE_SCHEMA).withColumn("ds", F.lit(night))
    centroid_frame = lookup.select("segment_id", "centroid", F.lit(night).alias("ds"))
    tables = {"membership": membership, "profiles": profile_frame, "centroids": centroid_frame}
    for name, frame in tables.items():
        root = wh.segments(name)
        stage = prepare_table(root)
        schema = write_partitioned(frame, stage, ["segment_id"] if name != "membership" else ["user_id"])
        publish_partitions(stage, root, [night], lambda _d: summary, schema)
    summary["seconds"] = round(time.time() - started, 2)
    update_run_manifest(wh, night, "segments", summary)
    log(
        JOB,
        f"done in {summary['seconds']:.1f}s: {k} segments of {n:,} consumers ({chosen}, silhouette "
        f"{chosen_silhouette:.3f})"
        + (f", ARI {ari:.3f} with {before} on {common:,} consumers" if before is not None else ", first night"),
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    return run_job(JOB, __doc__, argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
