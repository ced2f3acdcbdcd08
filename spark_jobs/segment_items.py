"""Segment-popular items: what the members of each consumer segment engaged with over the days before a day.

A list source for the ranker (spark_jobs/build_candidates.py, source ``segment_popular``) and a candidate list for
users without a personal one (spark_jobs/score_topk.py), used where the night judged it better than the shop-wide
popular list (training.ranker.cold_start; on Tmall it was not: docs/decisions.md, decision 21). The segments are
the consumer segments of spark_jobs/build_segments.py, read as of the night ``nightrec.segments.membership_night``
allows for each day.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from functools import reduce

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from nightrec.config import Settings
from nightrec.segments import membership_night
from nightrec.warehouse import Warehouse, complete_nights, partition

SEGMENT_DAYS = 30  # the window of the members' engagement, as the shop-wide popular_30d list


def members_by_anchor(spark: SparkSession, settings: Settings, anchors: Sequence[date]) -> DataFrame | None:
    """(anchor, user_id, segment_id): each anchor's segment membership; None when no anchor has a segmentation it
    may read (before the segments group's first nights)."""
    root = Warehouse.of(settings).segments("membership")
    nights = complete_nights(root)
    chosen = {a: membership_night(nights, a) for a in anchors}
    by_night: dict[date, list[date]] = {}
    for anchor, night in chosen.items():
        if night is not None:
            by_night.setdefault(night, []).append(anchor)
    if not by_night:
        return None
    frames = [
        spark.read.parquet(str(partition(root, night)))
        .select("user_id", "segment_id")
        .crossJoin(F.broadcast(spark.createDataFrame([(a,) for a in sorted(days)], "anchor date")))
        for night, days in sorted(by_night.items())
    ]
    return reduce(DataFrame.unionByName, frames)


def top_segment_items(recent: DataFrame, members: DataFrame, depth: int) -> DataFrame:
    """(anchor, segment_id, item_id, rank, n_members): each segment's `depth` items most of its members engaged with
    (distinct members), ties to the smaller item id.

    :param recent: pair-days (anchor, user_id, item_id) of the SEGMENT_DAYS before each anchor.
    :param members: :func:`members_by_anchor`'s rows.
    """
    engaged = (
        recent.join(members, ["anchor", "user_id"])
        .groupBy("anchor", "segment_id", "item_id")
        .agg(F.countDistinct("user_id").cast("double").alias("n_members"))
    )
    order = Window.partitionBy("anchor", "segment_id").orderBy(F.desc("n_members"), "item_id")
    return engaged.withColumn("rank", F.row_number().over(order)).where(F.col("rank") <= depth)
