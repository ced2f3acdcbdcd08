"""Ingest: raw deliveries of [start, end) -> bronze events + bronze quarantine, reconciled row for row.

For each day D the job reads every file in ``raw/<source>/ds=D/`` and writes

* ``bronze/events/ds=D/``: canonical events (nightrec.contract.EVENT_COLUMNS), one row per accepted raw row;
  identical rows of a day-grain source are repeated actions and are kept (their event ids differ by line);
* ``bronze/quarantine/ds=D/``: every rejected raw row, verbatim, with its reason.

A file whose bytes equal an earlier file of the same day is a re-delivery: its rows are counted, not ingested.
The job then checks, per day, raw rows = bronze + quarantined + re-delivered + forgotten (raw rows are counted
from the file bytes on the driver, independently of Spark, plus the rows of users forgotten since the file landed,
which its landing ledger keeps: nightrec/forget.py) and fails with ReconciliationError otherwise. The counts go
into each partition's _SUCCESS manifest and the day's run manifest.

    spark-submit spark_jobs/ingest_events.py --source tmall_brand --start 2014-04-15 --end 2014-08-16
"""

from __future__ import annotations

import time
from datetime import date, timedelta
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from nightrec.adapters import SourceAdapter, days_between, load_adapter
from nightrec.config import Settings
from nightrec.contract import EVENT_COLUMNS, QUARANTINE_COLUMNS, QuarantineReason
from nightrec.deliveries import DeliveredFile, inventory
from nightrec.errors import InputError, ReconciliationError
from nightrec.run_manifest import update_run_manifest
from nightrec.warehouse import Warehouse
from spark_jobs.common import (
    log,
    parse_event_time,
    prepare_table,
    publish_partitions,
    run_job,
    write_partitioned,
)

JOB = "ingest_events"


def _raw_rows(spark: SparkSession, adapter: SourceAdapter, files: list[DeliveredFile]) -> DataFrame:
    """One row per raw data row: ds, source_file, source_line (1 = header), raw_line and the source columns."""
    frames: list[DataFrame] = []
    by_header: dict[tuple[str, ...], list[DeliveredFile]] = {}
    for f in files:
        by_header.setdefault(f.header, []).append(f)
    for header, group in by_header.items():
        paths = [str(f.path) for f in group]
        if adapter.file_format == "parquet":
            df = spark.read.parquet(*paths).select(
                F.col("_metadata.file_path").alias("_path"),
                (F.col("_metadata.row_index") + 2).alias("source_line"),  # line 1 is the (virtual) header
                F.to_json(F.struct(*[F.col(c) for c in header])).alias("raw_line"),
                *[F.col(c).cast("string").alias(c) for c in header],
                F.lit(None).cast("string").alias("_corrupt"),
            )
        else:
            schema = ", ".join(f"`{c}` STRING" for c in header) + ", `_corrupt` STRING"
            text = spark.read.text(paths, wholetext=True).select(F.input_file_name().alias("_path"), F.col("value"))
            # One final newline ends the last row; it does not start an empty one. Nothing but posexplode may refer
            # to the split array: Spark re-evaluates a shared split per output row (quadratic in the file's lines).
            body = F.regexp_replace("value", "\n$", "")
            lines = text.select("_path", F.posexplode(F.split(body, "\n")).alias("_pos", "_line"))
            lines = lines.where(F.col("_pos") >= adapter.first_data_line - 1)  # position 0 is the header, if any
            lines = lines.withColumn("raw_line", F.regexp_replace("_line", "\r$", ""))
            parsed = F.from_csv(
                "raw_line",
                schema,
                {"sep": adapter.delimiter, "mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt"},
            )
            df = lines.select("_path", (F.col("_pos") + 1).alias("source_line"), "raw_line", parsed.alias("_r")).select(
                "_path",
                "source_line",
                "raw_line",
                *[F.col(f"_r.`{c}`").alias(c) for c in header],
                F.col("_r._corrupt").alias("_corrupt"),
            )
        frames.append(df.select("_path", "source_line", "raw_line", *adapter.source_columns, "_corrupt"))
    if not frames:  # every file of the range is empty or a re-delivery: no row to read, the counts still reconcile
        columns = ", ".join(f"`{c}` STRING" for c in ["_path", "raw_line", *adapter.source_columns, "_corrupt"])
        frames = [spark.createDataFrame([], f"{columns}, source_line INT")]
    out = frames[0].select("_path", "source_line", "raw_line", *adapter.source_columns, "_corrupt")
    for df in frames[1:]:
        out = out.unionByName(df)
    return out.select(
        F.to_date(F.regexp_extract("_path", r"ds=(\d{4}-\d{2}-\d{2})/[^/]+$", 1)).alias("ds"),
        F.regexp_extract("_path", r"/([^/]+)$", 1).alias("source_file"),
        "*",
    ).drop("_path")


def _clean_id(col: Column) -> Column:
    trimmed = F.trim(col)
    return F.when(trimmed != "", trimmed)


def canonicalize(raw: DataFrame, adapter: SourceAdapter) -> DataFrame:
    """Map source columns to the contract and attach a quarantine reason (NULL for accepted rows)."""
    cols = adapter.columns
    user = _clean_id(F.col(f"`{cols['user_id']}`"))
    item = _clean_id(F.col(f"`{cols['item_id']}`"))
    time_raw = _clean_id(F.col(f"`{cols['event_time']}`"))
    event_ts = parse_event_time(time_raw, adapter.time)
    if adapter.event_type_constant is not None:
        word = F.lit(adapter.event_type_constant)
    else:
        raw_type = _clean_id(F.col(f"`{cols['event_type']}`"))
        names = adapter.event_type_names
        mapped = F.create_map(*[F.lit(x) for kv in names.items() for x in kv]) if names else None
        word = F.coalesce(mapped[raw_type], raw_type) if mapped is not None else raw_type
    level_map = F.create_map(*[F.lit(x) for kv in adapter.levels.items() for x in kv])
    level = level_map[word].cast("int")
    if "event_id" in cols:
        event_id = _clean_id(F.col(f"`{cols['event_id']}`"))
    else:
        # docs/architecture.md, "Event contract": hash of source, delivered day, file and line -> stable across
        # reruns, distinct per row.
        event_id = F.substring(
            F.sha2(
                F.concat_ws(
                    "|",
                    F.lit(adapter.name),
                    F.col("ds").cast("string"),
                    "source_file",
                    F.col("source_line").cast("string"),
                ),
                256,
            ),
            1,
            32,
        )
    R = QuarantineReason
    reason = (
        F.when(F.col("raw_line") == "", R.BLANK_LINE.value)
        # Spark decodes the file as it splits it into lines: a byte that is not UTF-8 becomes U+FFFD here
        .when(F.col("raw_line").contains("\ufffd"), R.INVALID_ENCODING.value)
        .when(F.col("_corrupt").isNotNull(), R.MALFORMED_ROW.value)
        .when(event_id.isNull(), R.MISSING_EVENT_ID.value)
        .when(user.isNull(), R.MISSING_USER_ID.value)
        .when(item.isNull(), R.MISSING_ITEM_ID.value)
        .when(time_raw.isNull(), R.MISSING_EVENT_TIME.value)
        .when(event_ts.isNull(), R.UNPARSEABLE_EVENT_TIME.value)
        .when(level.isNull(), R.UNKNOWN_EVENT_TYPE.value)
        .when(F.to_date(event_ts) != F.col("ds"), R.EVENT_TIME_OUTSIDE_DELIVERY_DAY.value)
    )
    return raw.select(
        event_id.alias("event_id"),
        user.alias("user_id"),
        item.alias("item_id"),
        word.alias("event_type"),
        level.alias("level"),
        event_ts.alias("event_ts"),
        "ds",
        F.lit(adapter.name).alias("source"),
        "source_file",
        F.col("source_line").cast("int").alias("source_line"),
        "raw_line",
        reason.alias("reason"),
    )


def deduplicate_on_event_id(df: DataFrame) -> DataFrame:
    """Second and later rows with an event id already seen are quarantined (only sources with their own ids)."""
    from pyspark.sql.window import Window

    w = Window.partitionBy("event_id").orderBy("ds", "source_file", "source_line")
    rank = F.row_number().over(w)
    return df.withColumn(
        "reason",
        F.when(F.col("reason").isNull() & (rank > 1), QuarantineReason.DUPLICATE_EVENT_ID.value).otherwise(
            F.col("reason")
        ),
    )


def run(spark: SparkSession, settings: Settings, start: date, end: date) -> dict[date, dict[str, Any]]:
    """Ingest the days [start, end) of ``settings.source``; return each day's manifest."""
    t0 = time.time()
    adapter = load_adapter(settings.source)
    warehouse = Warehouse(settings.warehouse_root, adapter.name)
    if start < adapter.history_start:
        log(JOB, f"start {start} is before the source's first day; starting at {adapter.history_start}")
        start = adapter.history_start
    days = days_between(start, end)
    if not days:
        raise InputError(f"Nothing to ingest: [{start}, {end}) is empty for source '{adapter.name}'")
    files = inventory(adapter, warehouse, days)
    kept = [f for f in files if f.ingested]
    n_empty = sum(f.empty for f in files)
    log(
        JOB,
        f"{adapter.name} {start}..{end - timedelta(days=1)}: {len(files)} file(s), "
        f"{sum(f.rows for f in files):,} raw rows ({len(files) - len(kept) - n_empty} re-delivered file(s)"
        + (f", {n_empty} empty 0-byte file(s) recorded with no rows)" if n_empty else ")"),
    )

    events = canonicalize(_raw_rows(spark, adapter, kept), adapter)
    if "event_id" in adapter.columns:
        events = deduplicate_on_event_id(events)
    events = events.persist()

    counts: dict[tuple[date, str | None], int] = {
        (r["ds"], r["reason"]): r["n"] for r in events.groupBy("ds", "reason").agg(F.count("*").alias("n")).collect()
    }
    log(JOB, f"parsed {sum(counts.values()):,} rows in {time.time() - t0:.1f}s; writing bronze and quarantine")

    bronze_root, quarantine_root = warehouse.bronze_events(), warehouse.bronze_quarantine()
    bronze_stage, quarantine_stage = prepare_table(bronze_root), prepare_table(quarantine_root)
    bronze_schema = write_partitioned(
        events.where(F.col("reason").isNull()).select(*EVENT_COLUMNS), bronze_stage, ["source_file", "source_line"]
    )
    quarantine_schema = write_partitioned(
        events.where(F.col("reason").isNotNull()).select(*QUARANTINE_COLUMNS),
        quarantine_stage,
        ["source_file", "source_line"],
    )
    events.unpersist()

    manifests: dict[date, dict[str, Any]] = {}
    for ds in days:
        day_files = [f for f in files if f.ds == ds]
        raw_rows = sum(f.delivered_rows for f in day_files)
        redelivered = sum(f.rows for f in day_files if f.redelivery_of)
        forgotten = sum(f.forgotten for f in day_files)  # rows of users forgotten since delivery (nightrec/forget.py)
        bronze = counts.get((ds, None), 0)
        reasons = {r: n for (d, r), n in sorted(counts.items(), key=lambda kv: str(kv[0][1])) if d == ds and r}
        quarantined = sum(reasons.values())
        manifest = {
            "job": JOB,
            "source": adapter.name,
            "ds": ds.isoformat(),
            "files": [f.describe() for f in day_files],
            "raw_rows": raw_rows,
            "bronze_rows": bronze,
            "quarantined_rows": quarantined,
            "redelivered_rows": redelivered,
            "forgotten_rows": forgotten,
            "quarantine_reasons": reasons,
        }
        if raw_rows != bronze + quarantined + redelivered + forgotten:
            raise ReconciliationError(
                f"{adapter.name} ds={ds}: raw rows {raw_rows} != bronze {bronze} + quarantined {quarantined} + "
                f"re-delivered {redelivered} + forgotten {forgotten}; nothing was published. Files: {manifest['files']}"
            )
        manifests[ds] = manifest

    publish_partitions(bronze_stage, bronze_root, days, lambda d: manifests[d], bronze_schema)
    publish_partitions(quarantine_stage, quarantine_root, days, lambda d: manifests[d], quarantine_schema)
    elapsed = time.time() - t0
    for ds, m in manifests.items():
        update_run_manifest(warehouse, ds, JOB, {**m, "seconds": round(elapsed, 2)})
    tot = {
        k: sum(m[k] for m in manifests.values())
        for k in ("raw_rows", "bronze_rows", "quarantined_rows", "redelivered_rows", "forgotten_rows")
    }
    log(
        JOB,
        f"done in {elapsed:.1f}s: raw {tot['raw_rows']:,} = bronze {tot['bronze_rows']:,} + quarantined "
        f"{tot['quarantined_rows']:,} + re-delivered {tot['redelivered_rows']:,}"
        + (f" + forgotten {tot['forgotten_rows']:,}" if tot["forgotten_rows"] else "")
        + f" over {len(days)} day(s)",
    )
    return manifests


def main(argv: list[str] | None = None) -> int:
    return run_job(JOB, __doc__, argv, lambda job: run(job.spark, job.settings, job.start, job.end))


if __name__ == "__main__":
    raise SystemExit(main())
