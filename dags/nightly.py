"""The nightly DAG: one run per UTC day D, over the data interval [D 00:00, D+1 00:00).

A manual run of day D (`airflow dags test nightly D+1`, which `nightrec nightly --day D` runs) carries the END of
its interval as logical date; a scheduled or backfill run carries its start, D, and the end in its run id
(`scheduled__D+1`), so `airflow backfill create --from-date A --to-date B` processes the days A..B. Each run
re-reads ``pipeline.lookback_days`` earlier days so a late delivery is ingested and the affected partitions rebuilt;
every task is idempotent.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG
from airflow.timetables.interval import CronDataIntervalTimetable

from nightrec.adapters import load_adapter
from nightrec.config import load_settings
from nightrec_app.orchestration import NIGHTLY_DAG, pipeline, task_defaults

settings = load_settings()
adapter = load_adapter(settings.source)
lookback = settings.pipeline.lookback_days


def _utc(d) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


with DAG(
    dag_id=NIGHTLY_DAG,
    description=f"Nightly build for {adapter.name}: ingest, sequences, marts, features, training, top-k",
    # One data interval = one UTC day (Airflow 3's @daily would give start == end).
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=_utc(adapter.first_night(settings.airflow.first_night)),  # catch-up starts here
    # Manual runs (`airflow dags test nightly D+1`) carry the interval END as logical date and Airflow creates
    # no task whose end_date precedes it, so end_date is the day after the data; a scheduled run for a day past
    # the data is skipped by its land task with a message (docs/architecture.md, "Time").
    end_date=None if adapter.open_ended else _utc(adapter.history_end + timedelta(days=1)),  # a live feed runs on
    catchup=settings.airflow.catchup,  # on by default: every missed night, in order
    max_active_runs=1,  # day D continues from day D-1's sequences
    default_args=task_defaults(settings),  # retries; a failed task is recorded in the days' run manifests
    tags=["nightrec", adapter.name],
):
    pipeline(
        settings,
        start=f"{{{{ macros.ds_add(data_interval_start | ds, -{lookback}) }}}}",
        end="{{ data_interval_end | ds }}",
    )
