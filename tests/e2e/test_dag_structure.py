"""The DAG files parse with the real Airflow, wire the right tasks and map a logical date to one UTC day."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from itertools import pairwise

import pytest

from nightrec.airflow_env import airflow_environment
from nightrec.config import PROJECT_ROOT
from nightrec.errors import NothingToProcess
from tests.conftest import make_settings


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("wh"))
    env = airflow_environment(
        settings.with_overrides(airflow=settings.airflow.__class__(home=tmp_path_factory.mktemp("airflow"))), base={}
    )
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in env.items() if k.startswith(("AIRFLOW", "NIGHTREC"))})
    try:
        from airflow.dag_processing.dagbag import DagBag

        yield DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_dag_files_import_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dags) == {"nightly", "bootstrap"}


def test_nightly_runs_land_ingest_sequences_record_on_one_day_intervals(dagbag, tmall):
    dag = dagbag.dags["nightly"]
    order = ["land", "ingest_events", "build_sequences", "record_run"]
    for up, down in pairwise(order):
        assert dag.get_task(up).downstream_task_ids == {down}
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"
    # A manual run named 2014-08-16 (Airflow 3 names it by the interval end) processes day 2014-08-15.
    interval = dag.timetable.infer_manual_data_interval(run_after=datetime(2014, 8, 16, tzinfo=UTC))
    assert (interval.start.date(), interval.end.date()) == (date(2014, 8, 15), date(2014, 8, 16))
    assert dag.start_date.date() == tmall.nightly_start
    assert dag.max_active_runs == 1
    ingest = dag.get_task("ingest_events")
    assert ingest.application.endswith("spark_jobs/ingest_events.py")
    assert ingest.application_args[-4:] == [
        "--start",
        "{{ macros.ds_add(data_interval_start | ds, -2) }}",
        "--end",
        "{{ data_interval_end | ds }}",
    ]
    assert ingest._conn_id == "nightrec_spark"


def test_bootstrap_takes_a_range_as_params(dagbag, tmall):
    dag = dagbag.dags["bootstrap"]
    assert type(dag.timetable).__name__ == "NullTimetable"  # schedule=None: triggered, never scheduled
    assert dag.params["start"] == tmall.history_start.isoformat()
    assert dag.params["end"] == tmall.nightly_start.isoformat()


def test_a_day_past_the_history_is_skipped_not_processed(tmp_path, monkeypatch):
    from nightrec.tasks import land_days

    monkeypatch.setenv("NIGHTREC_WAREHOUSE_ROOT", str(tmp_path))
    with pytest.raises(NothingToProcess, match="Day 2014-08-16 is past the last day"):
        land_days("2014-08-14", "2014-08-17")
    assert not (tmp_path / "raw").exists()


def test_dag_files_parse_without_heavy_imports():
    """Parsing a DAG file must not import pyspark, pandas, torch or the jobs (DESIGN.md)."""
    code = (
        "import sys, runpy;"
        "runpy.run_path('dags/nightly.py'); runpy.run_path('dags/bootstrap.py');"
        "heavy = [m for m in ('pyspark', 'pandas', 'torch', 'spark_jobs', 'nightrec.landing') if m in sys.modules];"
        "print(heavy)"
    )
    t0 = time.time()
    env = airflow_environment(make_settings(PROJECT_ROOT / "warehouse"), base=dict(os.environ))
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert time.time() - t0 < 60
