"""The Spark jobs on a Spark standalone cluster instead of ``local[*]``: only ``spark.master`` changes (the ``cluster``
profile's setting), the DAG's own SparkSubmitOperator submits them through the connection Airflow is given from the
settings, and the tables are the ones the in-process run of the same days writes."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from nightrec.attributes import ingest_attributes
from nightrec.landing import replay
from nightrec.warehouse import Warehouse
from nightrec_app.airflow_env import airflow_environment
from nightrec_app.orchestration import spark_job
from tests.conftest import make_settings, read_table

pytestmark = pytest.mark.spark

JOBS = ("ingest_events", "build_sequences")


def test_the_spark_jobs_submitted_to_a_standalone_cluster_write_the_tables_of_the_local_run(
    spark_standalone, tmall_warehouse, tmall, tmp_path, monkeypatch
):
    local = make_settings(tmp_path / "warehouse")
    settings = local.with_overrides(
        spark=replace(local.spark, master=spark_standalone.master),
        airflow=replace(local.airflow, home=tmp_path / "airflow"),
    )
    start = tmall.history_start
    end = start + timedelta(days=3)
    days = [start + timedelta(days=i) for i in range(3)]
    wh = Warehouse(settings.warehouse_root, tmall.name)
    replay(tmall, wh, start, end)
    ingest_attributes(tmall, wh)
    before = {app["id"] for app in spark_standalone.applications()}
    for key, value in airflow_environment(settings).items():  # what an Airflow worker's task process is given
        monkeypatch.setenv(key, value)
    for job in JOBS:
        spark_job(settings, job, str(start), str(end)).execute({})

    ran = [app for app in spark_standalone.applications() if app["id"] not in before]
    assert sorted(app["name"] for app in ran) == sorted(f"{job}:{tmall.name}" for job in JOBS)  # the jobs' names
    assert all(app["state"] == "FINISHED" and app["cores"] >= 1 for app in ran), ran  # executors on the worker

    reference = Warehouse(tmall_warehouse.warehouse_root, tmall.name)
    for name, ours, theirs in [
        ("bronze", wh.bronze_events(), reference.bronze_events()),
        ("quarantine", wh.bronze_quarantine(), reference.bronze_quarantine()),
        ("silver", wh.silver_sequences(), reference.silver_sequences()),
    ]:
        on_cluster, in_process = read_table(ours, days), read_table(theirs, days)
        assert len(on_cluster) == len(in_process), name
        assert on_cluster.astype(str).equals(in_process.astype(str)), name
    assert len(read_table(wh.bronze_events(), days)) > 1000  # real rows, not three empty days
