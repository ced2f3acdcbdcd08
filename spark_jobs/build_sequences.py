"""Sequences: bronze events -> silver/sequences/ds=D/, each active user's behaviour sequence as of the end of D.

For every user with at least one event on D the row holds the last N tokens (N = pipeline.sequence_length) of
their whole history through D, oldest first, as parallel arrays (item id, level, event time, gap in seconds
to the previous event of any day), plus cumulative summary columns. A user's latest partition is their state.

One pass covers any range: the job reads each user's state from the latest silver partition before ``start``
and the bronze events of [start, end), so the bootstrap (whole history, one Spark start) and the nightly run
(one day plus lookback) produce the same rows. Tokens of one timestamp (day-grain sources) keep the delivered
file's line order.

    spark-submit spark_jobs/build_sequences.py --source tmall_brand --start 2014-04-15 --end 2014-08-16
"""

from __future__ import annotations

import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from nightrec.adapters import days_between, load_adapter
from nightrec.config import Settings
from nightrec.errors import InputError
from nightrec.run_manifest import update_run_manifest
from nightrec.storage import SUCCESS_FILE, data_files
from nightrec.warehouse import Warehouse, partition
from spark_jobs.common import (
    log,
    prepare_table,
    publish_partitions,
    run_job,
    write_partitioned,
)

JOB = "build_sequences"

SEQUENCE_COLUMNS = [
    "user_id",
    "seq_item_ids",  # array<string>, oldest first
    "seq_levels",  # array<int>
    "seq_event_ts",  # array<timestamp>
    "seq_gap_seconds",  # array<bigint>: seconds since the user's previous event (NULL for their first)
    "seq_length",  # int, <= N
    "events_on_day",  # events of the user on D
    "events_total",  # events through D
    "level_counts",  # array<bigint>: events through D per level (index 0 = level 1)
    "active_days",  # distinct days with events through D
    "first_event_ts",
    "last_event_ts",
    "max_level",  # highest level ever reached
    "source",
    "ds",
]


def _require_partitions(table: str, root: Path, days: list[date], hint: str) -> None:
    missing = [d for d in days if not (partition(root, d) / SUCCESS_FILE).is_file()]
    if missing:
        shown = ", ".join(str(d) for d in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InputError(
            f"{table} has no completed partition for {len(missing)} day(s): {shown} (under {root}). {hint}"
        )


def _read_partitions(spark: SparkSession, root: Path, start: date | None, end: date) -> DataFrame | None:
    if not root.is_dir() or not any(root.glob("ds=*/*.parquet")):
        return None
    df = spark.read.option("basePath", str(root)).parquet(str(root))
    cond = F.col("ds") < F.lit(end)
    if start is not None:
        cond = cond & (F.col("ds") >= F.lit(start))
    return df.where(cond)


def build(events: DataFrame, state: DataFrame | None, n: int, max_level: int, source: str) -> DataFrame:
    """The sequence rows for every (user, day) in ``events``, continuing from ``state`` (latest rows before)."""
    token = "struct<item_id:string,level:int,event_ts:timestamp,gap:bigint>"
    w_ev = Window.partitionBy("user_id").orderBy("event_ts", "ds", "source_file", "source_line")
    ev = events.withColumn("_prev_ts", F.lag("event_ts").over(w_ev))
    if state is not None:
        active_users = events.select("user_id").distinct()
        state = state.join(active_users, "user_id", "left_semi")
        ev = ev.join(state.select("user_id", F.col("last_event_ts").alias("_state_ts")), "user_id", "left")
    else:
        ev = ev.withColumn("_state_ts", F.lit(None).cast("timestamp"))
    ev = ev.withColumn("gap", F.unix_seconds("event_ts") - F.unix_seconds(F.coalesce("_prev_ts", "_state_ts")))

    levels = range(1, max_level + 1)
    day = ev.groupBy("user_id", "ds").agg(
        F.sort_array(
            F.collect_list(F.struct("event_ts", "source_file", "source_line", "item_id", "level", "gap"))
        ).alias("_toks"),
        F.count("*").alias("_n"),
        *[F.sum(F.when(F.col("level") == lv, 1).otherwise(0)).cast("bigint").alias(f"_l{lv}") for lv in levels],
        F.min("event_ts").alias("_first"),
        F.max("event_ts").alias("_last"),
        F.max("level").alias("_max"),
    )
    day = day.select(
        "user_id",
        "ds",
        F.transform(
            F.slice("_toks", F.greatest(F.size("_toks") - n + 1, F.lit(1)), n),
            lambda t: F.struct(
                t["item_id"].alias("item_id"),
                t["level"].alias("level"),
                t["event_ts"].alias("event_ts"),
                t["gap"].alias("gap"),
            ),
        )
        .cast(f"array<{token}>")
        .alias("_tokens"),
        F.col("_n").alias("_events"),
        F.col("_n").alias("events_on_day"),
        *[f"_l{lv}" for lv in levels],
        "_first",
        "_last",
        "_max",
        F.lit(1).alias("_active"),
        F.lit(False).alias("_is_state"),
    )
    parts = [day]
    if state is not None:
        parts.append(
            state.select(
                "user_id",
                "ds",
                F.arrays_zip(
                    F.col("seq_item_ids").alias("item_id"),
                    F.col("seq_levels").alias("level"),
                    F.col("seq_event_ts").alias("event_ts"),
                    F.col("seq_gap_seconds").alias("gap"),
                )
                .cast(f"array<{token}>")
                .alias("_tokens"),
                F.col("events_total").alias("_events"),
                F.lit(0).cast("bigint").alias("events_on_day"),
                *[F.coalesce(F.col("level_counts")[lv - 1], F.lit(0)).cast("bigint").alias(f"_l{lv}") for lv in levels],
                F.col("first_event_ts").alias("_first"),
                F.col("last_event_ts").alias("_last"),
                F.col("max_level").alias("_max"),
                F.col("active_days").alias("_active"),
                F.lit(True).alias("_is_state"),
            )
        )
    rows = parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])

    w_last_n = Window.partitionBy("user_id").orderBy("ds").rowsBetween(-(n - 1), Window.currentRow)
    w_cum = Window.partitionBy("user_id").orderBy("ds").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    # Every day row holds >= 1 token, so the last N tokens lie within the last N rows.
    tokens = F.flatten(F.collect_list("_tokens").over(w_last_n))
    rows = rows.select(
        "user_id",
        "ds",
        "events_on_day",
        "_is_state",
        "_last",
        F.slice(tokens, F.greatest(F.size(tokens) - n + 1, F.lit(1)), n).alias("_seq"),
        F.sum("_events").over(w_cum).alias("events_total"),
        F.array(*[F.sum(f"_l{lv}").over(w_cum) for lv in levels]).alias("level_counts"),
        F.sum("_active").over(w_cum).cast("int").alias("active_days"),
        F.min("_first").over(w_cum).alias("first_event_ts"),
        F.max("_max").over(w_cum).alias("max_level"),
    ).where(~F.col("_is_state"))
    return rows.select(
        "user_id",
        F.col("_seq.item_id").alias("seq_item_ids"),
        F.col("_seq.level").alias("seq_levels"),
        F.col("_seq.event_ts").alias("seq_event_ts"),
        F.col("_seq.gap").alias("seq_gap_seconds"),
        F.size("_seq").alias("seq_length"),
        "events_on_day",
        "events_total",
        "level_counts",
        "active_days",
        "first_event_ts",
        F.col("_last").alias("last_event_ts"),
        "max_level",
        F.lit(source).alias("source"),
        "ds",
    )


def _partition_stats(part: Path) -> dict[str, int]:
    """Users, tokens and events of a staged partition, from two small columns (read on the driver)."""
    import pyarrow.parquet as pq

    stats = {"users": 0, "tokens": 0, "events": 0}
    for f in data_files(part):
        t = pq.read_table(f, columns=["seq_length", "events_on_day"])
        stats["users"] += t.num_rows
        stats["tokens"] += int(pa_sum(t.column("seq_length")))
        stats["events"] += int(pa_sum(t.column("events_on_day")))
    return stats


def pa_sum(column) -> int:
    import pyarrow.compute as pc

    return pc.sum(column).as_py() or 0


def latest_state(silver: DataFrame) -> DataFrame:
    """Each user's most recent sequence row (their state)."""
    w = Window.partitionBy("user_id").orderBy(F.col("ds").desc())
    return silver.withColumn("_rn", F.row_number().over(w)).where("_rn = 1").drop("_rn")


def run(spark: SparkSession, settings: Settings, start: date, end: date) -> dict[date, dict[str, Any]]:
    """Build the sequence partitions of [start, end) for ``settings.source``; return each day's manifest."""
    t0 = time.time()
    adapter = load_adapter(settings.source)
    warehouse = Warehouse(settings.warehouse_root, adapter.name)
    start = max(start, adapter.history_start)
    days = days_between(start, end)
    if not days:
        raise InputError(f"Nothing to build: [{start}, {end}) is empty for source '{adapter.name}'")
    n = settings.pipeline.sequence_length
    bronze_root, silver_root = warehouse.bronze_events(), warehouse.silver_sequences()
    _require_partitions("bronze/events", bronze_root, days, "Run ingest_events for these days first.")
    if start > adapter.history_start:
        _require_partitions(
            "silver/sequences",
            silver_root,
            [start - timedelta(days=1)],
            "Sequences continue from the previous day's state: run the bootstrap (or this job from the first "
            "day of the history) first.",
        )
    events = _read_partitions(spark, bronze_root, start, end)
    silver_before = _read_partitions(spark, silver_root, None, start) if start > adapter.history_start else None
    state = latest_state(silver_before) if silver_before is not None else None
    log(
        JOB,
        f"{adapter.name} {start}..{end - timedelta(days=1)}: N={n}, "
        f"state from {'silver before ' + str(start) if state is not None else 'nothing (first day)'}",
    )

    if events is None:
        raise InputError(f"bronze/events under {bronze_root} holds no Parquet file for [{start}, {end})")
    stage = prepare_table(silver_root)
    rows = build(events, state, n, adapter.max_level, adapter.name)
    schema = write_partitioned(rows.select(*SEQUENCE_COLUMNS), stage, ["user_id"])
    stats = {ds: _partition_stats(partition(stage, ds)) for ds in days}
    manifests = {
        ds: {"job": JOB, "source": adapter.name, "ds": ds.isoformat(), "sequence_length": n, **stats[ds]} for ds in days
    }
    publish_partitions(stage, silver_root, days, lambda d: manifests[d], schema)
    elapsed = time.time() - t0
    for ds, m in manifests.items():
        update_run_manifest(warehouse, ds, JOB, {**m, "seconds": round(elapsed, 2)})
    log(
        JOB,
        f"done in {elapsed:.1f}s: {sum(m['users'] for m in manifests.values()):,} user-day rows, "
        f"{sum(m['events'] for m in manifests.values()):,} events over {len(days)} day(s)",
    )
    return manifests


def main(argv: list[str] | None = None) -> int:
    return run_job(JOB, __doc__, argv, lambda job: run(job.spark, job.settings, job.start, job.end))


if __name__ == "__main__":
    raise SystemExit(main())
