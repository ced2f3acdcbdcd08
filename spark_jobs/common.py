"""What every Spark job shares: its `main` (arguments, session), the [start, end) range, partition publication."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from nightrec.config import Settings, load_settings
from nightrec.errors import HistoryTooShort
from nightrec.logs import show_progress
from nightrec.storage import (
    SUCCESS_FILE,
    clean_stale_temporaries,
    data_files,
    fresh_staging,
    swap_into_place,
    temp_sibling,
    write_json_atomic,
)
from nightrec.timeformats import FORMAT_REGEX, ZONE_SUFFIX, TimeSpec
from nightrec.warehouse import partition


def log(job: str, message: str) -> None:
    """Progress output: one line per step to the job's logger (``spark_jobs.<job>``; shown by spark-submit's output,
    which Airflow's task log carries live)."""
    logging.getLogger(f"spark_jobs.{job}").info(message)


def build_spark(settings: Settings, app_name: str) -> SparkSession:
    """The session for a job. Under spark-submit the master comes from spark-submit; otherwise from settings."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    # Under spark-submit (which sets PYSPARK_GATEWAY_PORT) master and driver memory come from its flags.
    if not os.environ.get("PYSPARK_GATEWAY_PORT"):
        builder = builder.master(settings.spark.master).config("spark.driver.memory", settings.spark.driver_memory)
    if settings.spark.master.startswith("local"):
        builder = builder.config("spark.ui.enabled", "false")
    for key, value in settings.spark.all_conf().items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def job_arguments(description: str, argv: list[str] | None) -> argparse.Namespace:
    """The arguments every job takes: a source and a half-open day range [start, end)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--source", help="source profile (conf/sources/<name>.yaml); default from settings")
    parser.add_argument("--start", required=True, type=date.fromisoformat, help="first day D to process (YYYY-MM-DD)")
    parser.add_argument("--end", required=True, type=date.fromisoformat, help="day after the last one (exclusive)")
    parser.add_argument("--profile", help="configuration profile (conf/profiles/<name>.yaml)")
    parser.add_argument("--warehouse", type=Path, help="warehouse root (overrides the profile)")
    args = parser.parse_args(argv)
    if args.end <= args.start:
        parser.error(f"--end ({args.end}) must be after --start ({args.start})")
    return args


def settings_from_args(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.profile)
    changes: dict[str, Any] = {}
    if args.warehouse:
        changes["warehouse_root"] = args.warehouse.resolve()
    if args.source:
        changes["source"] = args.source
    return settings.with_overrides(**changes) if changes else settings


@dataclass
class JobRun:
    """One spark-submit of a job: its settings and day range [start, end), and a session started on first use (a
    job that finds nothing to do ends without starting Spark)."""

    name: str
    settings: Settings
    start: date
    end: date
    _spark: SparkSession | None = None

    @property
    def spark(self) -> SparkSession:
        if self._spark is None:
            self._spark = build_spark(self.settings, f"{self.name}:{self.settings.source}")
        return self._spark

    @property
    def last_day(self) -> date:
        """The range's last day (the night a nightly job works for)."""
        return self.end - timedelta(days=1)

    def stop(self) -> None:
        if self._spark is not None:
            self._spark.stop()


def run_job(name: str, description: str, argv: list[str] | None, body: Callable[[JobRun], object]) -> int:
    """The ``main`` of every job: parse the arguments, run ``body``, stop the session whatever happens.

    A body that raises :class:`HistoryTooShort` (the history cannot hold what the job needs yet) ends the job
    successfully with the reason logged: the DAG goes on, and the tasks after it record why they have nothing.
    """
    show_progress()
    args = job_arguments(description.splitlines()[0], argv)
    job = JobRun(name, settings_from_args(args), args.start, args.end)
    try:
        body(job)
    except HistoryTooShort as exc:
        log(name, f"skipped: {exc}")
    finally:
        job.stop()
    return 0


def parse_event_time(value: Column, spec: TimeSpec) -> Column:
    """Spark twin of :func:`nightrec.timeformats.parse_times`: UTC timestamp, or NULL when invalid."""
    valid = value.rlike(FORMAT_REGEX[spec.format])
    if spec.format == "month-day":
        parsed = F.try_to_timestamp(F.concat(F.lit(f"{spec.year}-"), value), F.lit("yyyy-M-d"))
    elif spec.format == "iso-date":
        parsed = F.try_to_timestamp(value, F.lit("yyyy-MM-dd"))
    elif spec.format == "iso-datetime":
        clock = F.regexp_replace(F.substring(value, 1, 19), "T", " ")
        local = F.try_to_timestamp(clock, F.lit("yyyy-MM-dd HH:mm:ss"))
        naive = local if spec.timezone == "UTC" else _local_to_utc(local, spec.timezone)
        # a value's own zone wins over the adapter's: " UTC" and "Z" are +00:00, "+0200" is +02:00
        zone = F.regexp_replace(
            F.regexp_replace(F.substring(value, 20, 7), "^( UTC|Z)$", "+00:00"), "^([+-]..)(..)$", "$1:$2"
        )
        zoned = F.try_to_timestamp(F.concat(clock, zone), F.lit("yyyy-MM-dd HH:mm:ssXXX"))
        parsed = F.when(value.rlike(ZONE_SUFFIX), zoned).otherwise(naive)
    elif spec.format == "epoch-seconds":
        parsed = F.timestamp_seconds(value.cast("bigint"))
    else:
        parsed = F.timestamp_millis(value.cast("bigint"))
    return F.when(valid, parsed)


def _local_to_utc(local: Column, timezone: str) -> Column:
    """A zone's wall-clock time as UTC, NULL where the wall clock is ambiguous or skipped by a daylight-saving change
    (as pandas' tz_localize with ambiguous/nonexistent="NaT" in parse_times): to_utc_timestamp alone would guess."""
    utc = F.to_utc_timestamp(local, timezone)
    back = F.from_utc_timestamp(utc, timezone)
    hour = F.expr("INTERVAL 1 HOUR")
    earlier, later = F.from_utc_timestamp(utc - hour, timezone), F.from_utc_timestamp(utc + hour, timezone)
    twice = (earlier == local) | (later == local)
    return F.when((back == local) & ~twice, utc)


def write_partitioned(df: DataFrame, staging: Path, sort_cols: list[str]) -> Any:
    """Write one Parquet file per ds partition, rows in a fixed order; return the Arrow schema of the files."""
    from pyspark.sql.pandas.types import to_arrow_schema

    (
        df.repartition(F.col("ds"))
        .sortWithinPartitions("ds", *sort_cols)
        .write.mode("overwrite")
        .partitionBy("ds")
        .parquet(str(staging))
    )
    return to_arrow_schema(df.drop("ds").schema, timezone="UTC")


def publish_partitions(
    staging: Path,
    table_root: Path,
    days: Iterable[date],
    manifest_for: Callable[[date], dict[str, Any]],
    schema: Any,
) -> None:
    """Move each day's staged partition into place atomically, with fixed file names and a _SUCCESS manifest.

    A day with no rows still gets a partition, a manifest and a schema-only Parquet file, so "processed, nothing
    there" differs from "never processed" and every reader (DuckDB, Spark, pandas) sees the table's columns.
    """
    import pyarrow.parquet as pq

    table_root.mkdir(parents=True, exist_ok=True)
    for ds in days:
        staged = partition(staging, ds)
        ready = temp_sibling(partition(table_root, ds))
        ready.mkdir()
        parts = [f for f in data_files(staged) if f.suffix == ".parquet"]
        for i, f in enumerate(parts):
            f.rename(ready / f"part-{i:05d}.parquet")
        if not parts:
            pq.write_table(schema.empty_table(), ready / "part-00000.parquet")
        write_json_atomic(ready / SUCCESS_FILE, manifest_for(ds))
        swap_into_place(ready, partition(table_root, ds))
    if staging.exists():
        shutil.rmtree(staging)


def prepare_table(table_root: Path) -> Path:
    """Remove leftovers of killed runs and return a fresh staging directory beside the table."""
    table_root.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(table_root)  # half-built partitions of this table
    return fresh_staging(table_root)  # after removing this table's own stale staging directories
