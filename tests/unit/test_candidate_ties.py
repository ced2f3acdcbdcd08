"""A candidate source's summed scores tie when they are equal in exact arithmetic, whatever order they were added in."""

from __future__ import annotations

from datetime import date

from pyspark.sql import Window
from pyspark.sql import functions as F

from spark_jobs.build_candidates import _ranked

ANCHOR = date(2014, 8, 8)


def test_scores_equal_but_for_the_order_of_their_sums_tie_and_go_to_the_smaller_item_id(spark) -> None:
    later, earlier = 0.1 + 0.2 + 0.3, 0.3 + 0.2 + 0.1  # 0.6000000000000001 and 0.6: one sum, two orders
    assert later != earlier
    frame = spark.createDataFrame(
        [(ANCHOR, "u1", "b", later), (ANCHOR, "u1", "a", earlier), (ANCHOR, "u1", "c", 0.5)],
        "anchor date, user_id string, item_id string, score double",
    )
    # ordered by the raw sums, the noise of the sum's order decides
    raw = Window.partitionBy("anchor", "user_id").orderBy(F.col("score").desc(), F.col("item_id"))
    rows = frame.withColumn("rank", F.row_number().over(raw)).where(F.col("rank") <= 2).orderBy("rank").collect()
    assert [row["item_id"] for row in rows] == ["b", "a"]
    # every source goes through _ranked, which rounds first: a tie, to the smaller item id
    top = _ranked(frame, "transitions", F.col("score"), 2).orderBy("rank").collect()
    assert [row["item_id"] for row in top] == ["a", "b"]
    ranked = _ranked(frame, "transitions", F.col("score"), None).orderBy("rank").collect()
    expected = [("a", 1.0, 0.6), ("b", 2.0, 0.6), ("c", 3.0, 0.5)]
    assert [(r["item_id"], r["rank"], r["score"]) for r in ranked] == expected
