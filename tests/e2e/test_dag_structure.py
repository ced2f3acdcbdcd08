"""The DAG files parse with the real Airflow, wire the right tasks and map a logical date to one UTC day."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from itertools import pairwise
from pathlib import Path

import pytest

from nightrec.config import PROJECT_ROOT
from nightrec.errors import NothingToProcess
from nightrec.warehouse import Warehouse
from nightrec_app.airflow_env import airflow_environment
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

        from nightrec.dbt_runner import ensure_manifest

        ensure_manifest()  # Cosmos renders from it; the CLI refreshes it the same way before every run
        yield DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_dag_files_import_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dags) == {"nightly", "bootstrap", "forget_users"}


def test_every_task_of_every_dag_stops_on_sigterm(dagbag):
    """The hook that makes SIGTERM fail the running task reaches every operator, dbt's and Spark's included
    (e2e test_terminated_run.py shows what it does)."""
    from nightrec_app.orchestration import stop_when_terminated

    tasks = [t for dag in dagbag.dags.values() for t in dag.tasks]
    assert {type(t).__name__ for t in tasks} >= {"_PythonDecoratedOperator", "SparkSubmitOperator"}
    assert any(t.task_id.startswith("dbt.") for t in tasks)
    assert [t.task_id for t in tasks if t._pre_execute_hook is not stop_when_terminated] == []


def test_nightly_runs_land_ingest_sequences_dbt_publish_record_on_one_day_intervals(dagbag, tmall):
    dag = dagbag.dags["nightly"]
    order = ["land", "validate_raw", "ingest_attributes", "ingest_events", "validate_bronze", "build_sequences"]
    for up, down in pairwise(order):
        assert dag.get_task(up).downstream_task_ids == {down}
    dbt_tasks = {t.task_id for t in dag.tasks if t.task_id.startswith("dbt.")}
    models = [
        "stg_bronze__events",
        "stg_bronze__quarantine",
        "stg_bronze__item_attributes",
        "stg_bronze__user_attributes",
        "int_events__user_item_days",
        "int_events__user_days",
        "fct_interactions",
        "training_examples",
        "dim_users",
        "dim_items",
        "user_features",
        "item_features",
        "user_item_features",
        "user_sequences",
    ]
    detached = {  # tests with two parents run in their own task once both tables exist
        "dbt.relationships_fct_interactions_user_id__user_id__ref_dim_users__test",
        "dbt.relationships_fct_interactions_item_id__item_id__ref_dim_items__test",
        "dbt.relationships_user_item_features_user_id__user_id__ref_dim_users__test",
    }
    assert dbt_tasks == {f"dbt.{m}_model_build" for m in models} | detached  # one task per model + its tests
    # a real scheduler starts independent models together; both local targets take one writer: one pool slot
    assert {dag.get_task(t).pool for t in dbt_tasks} == {"nightrec_dbt"}
    assert dag.catchup is True and dag.max_active_runs == 1
    for test_task in detached:
        model = test_task.removeprefix("dbt.relationships_").split("_user_id__")[0].split("_item_id__")[0]
        assert f"dbt.{model}_model_build" in dag.get_task(test_task).upstream_task_ids
    assert dag.get_task("build_sequences").downstream_task_ids == {  # the models that read the zones
        "dbt.stg_bronze__events_model_build",
        "dbt.stg_bronze__quarantine_model_build",
        "dbt.stg_bronze__item_attributes_model_build",
        "dbt.stg_bronze__user_attributes_model_build",
        "dbt.user_sequences_model_build",
    }
    assert dag.get_task("dbt.fct_interactions_model_build").upstream_task_ids == {
        "dbt.int_events__user_item_days_model_build"
    }
    assert dag.get_task("publish_marts").downstream_task_ids == {"feast_apply"}
    assert dag.get_task("feast_apply").downstream_task_ids == {"feast_materialize"}
    # from the published features on, two branches: the lists and the consumer segments
    assert dag.get_task("feast_materialize").downstream_task_ids == {"train", "segments.train_consumer_encoder"}
    # the models, then the night's candidates (Spark), the ranker that decides the lists, then the lists
    assert dag.get_task("train").downstream_task_ids == {"build_candidates"}
    assert dag.get_task("build_candidates").application.endswith("spark_jobs/build_candidates.py")
    assert dag.get_task("build_candidates").downstream_task_ids == {"train_ranker"}
    assert dag.get_task("train_ranker").downstream_task_ids == {"score_topk"}
    assert dag.get_task("score_topk").application.endswith("spark_jobs/score_topk.py")
    assert dag.get_task("score_topk").downstream_task_ids == {"publish_topk"}
    # beside them the consumer segments: the encoder, the segments job (Spark); the audiences read the analysts'
    # database (one writer) once the lists' mart is in it, then the segment marts are built there
    assert dag.get_task("segments.train_consumer_encoder").upstream_task_ids == {"feast_materialize"}
    assert dag.get_task("segments.train_consumer_encoder").downstream_task_ids == {"segments.build_segments"}
    assert dag.get_task("segments.build_segments").application.endswith("spark_jobs/build_segments.py")
    assert dag.get_task("segments.build_segments").downstream_task_ids == {"segments.build_audiences"}
    assert dag.get_task("publish_topk").downstream_task_ids == {"segments.build_audiences"}
    assert dag.get_task("segments.build_audiences").downstream_task_ids == {"segments.publish_segments"}
    assert dag.get_task("segments.publish_segments").downstream_task_ids == {"apply_retention"}
    # old versions removed once every output of the night is published, then the run recorded
    assert dag.get_task("apply_retention").downstream_task_ids == {"record_run"}
    assert not any(t.startswith("dbt.topk_current") for t in dag.task_ids)  # built by publish_topk, not the group
    assert not any(t.startswith("dbt.segment_") for t in dag.task_ids)  # built by publish_segments
    assert dag.get_task("validate_marts").downstream_task_ids == {"publish_marts"}
    assert {"dbt.training_examples_model_build", "dbt.user_features_model_build"} <= dag.get_task(
        "validate_marts"
    ).upstream_task_ids
    assert dag.get_task("dbt.user_features_model_build").dbt_cmd_flags == ["--exclude-resource-type", "unit_test"]
    dbt_vars = dag.get_task("dbt.fct_interactions_model_build").vars
    assert dbt_vars["start_ds"] == "{{ macros.ds_add(data_interval_start | ds, -2) }}"
    assert dbt_vars["end_ds"] == "{{ data_interval_end | ds }}"
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
    assert not {"train", "score_topk", "publish_topk"} & set(dag.task_ids)  # the first nightly run trains on it
    assert not any(t.startswith("segments.") for t in dag.task_ids)
    assert dag.get_task("feast_materialize").downstream_task_ids == {"record_run"}
    assert type(dag.timetable).__name__ == "NullTimetable"  # schedule=None: triggered, never scheduled
    assert dag.params["start"] == tmall.history_start.isoformat()
    assert dag.params["end"] == tmall.nightly_start.isoformat()


def test_forget_users_is_triggered_with_a_list_of_ids_and_runs_one_task(dagbag):
    """Never scheduled; its one task takes the ids from the trigger's conf (the e2e test runs it on real users)."""
    from airflow.sdk.exceptions import ParamValidationError

    dag = dagbag.dags["forget_users"]
    assert type(dag.timetable).__name__ == "NullTimetable" and dag.max_active_runs == 1
    assert dag.task_ids == ["forget_users"]
    ids, dry_run = dag.params.get_param("user_ids"), dag.params.get_param("dry_run")
    assert ids.value == [] and dry_run.value is False
    assert ids.schema["minItems"] == 1  # a trigger without ids is refused by Airflow
    with pytest.raises(ParamValidationError, match="should be non-empty"):
        ids.resolve([])
    assert ids.resolve(["10000250"]) == ["10000250"]


def test_the_published_marts_features_and_lists_are_assets_a_dag_can_be_scheduled_on(dagbag, tmall):
    """publish_marts, feast_materialize, publish_topk and publish_segments declare the warehouse paths they publish as
    Airflow Assets (the bootstrap DAG publishes the first two as well); the e2e run checks that Airflow recorded their
    events."""
    from nightrec_app.orchestration import PUBLISHED

    wh = Warehouse(Path(os.environ["NIGHTREC_WAREHOUSE_ROOT"]), tmall.name)  # the dagbag's settings
    nightly = ("marts", "features", "topk", "segments")
    for dag_id, published in (("nightly", nightly), ("bootstrap", ("marts", "features"))):
        dag = dagbag.dags[dag_id]
        for what in published:
            task_id, path = PUBLISHED[what]
            (asset,) = dag.get_task(task_id).outlets
            assert (asset.name, asset.group) == (f"nightrec_{tmall.name}_{what}", "nightrec")
            assert asset.uri == path(wh).as_uri()
        others = [t.task_id for t in dag.tasks if t.outlets and t.task_id not in {PUBLISHED[w][0] for w in published}]
        assert others == []


def test_an_open_ended_feed_gets_a_nightly_dag_without_an_end_date(dagbag, tmp_path, monkeypatch):
    """A live feed without history.end: the nightly DAG runs on (no end_date); a bundled history's DAG ends."""
    from airflow.dag_processing.dagbag import DagBag

    from tests.unit.test_live_feed import FEED, OPEN

    sources = tmp_path / "sources"
    sources.mkdir()
    (sources / "tmall_feed.yaml").write_text(FEED.replace(OPEN, ""))
    for module in ("nightrec.adapters", "nightrec.config"):
        monkeypatch.setattr(f"{module}.SOURCES_DIR", sources)
    monkeypatch.setenv("NIGHTREC_SOURCE", "tmall_feed")
    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / "nightly.py"))
    assert bag.import_errors == {}
    feed_dag = bag.dags["nightly"]
    assert feed_dag.end_date is None and feed_dag.start_date == datetime(2014, 4, 15, tzinfo=UTC)
    assert dagbag.dags["nightly"].end_date == datetime(2014, 8, 16, tzinfo=UTC)


def test_a_day_past_the_history_is_skipped_not_processed(tmp_path):
    from nightrec.context import RunContext
    from nightrec_app.tasks import land_days

    with pytest.raises(NothingToProcess, match="Day 2014-08-16 is past the last day"):
        land_days(RunContext.of(make_settings(tmp_path), "2014-08-14", "2014-08-17"), "nightly", "manual__test")
    assert not (tmp_path / "raw").exists()


def test_dag_files_parse_without_heavy_imports():
    """Parsing a DAG file must not import pyspark, pandas, torch or the jobs (docs/architecture.md, "Layout")."""
    code = (
        "import sys, runpy;"
        "runpy.run_path('dags/nightly.py'); runpy.run_path('dags/bootstrap.py');"
        "runpy.run_path('dags/forget_users.py');"
        "heavy = ('pyspark', 'pandas', 'torch', 'great_expectations', 'feast', 'spark_jobs', 'nightrec.landing');"
        "heavy = [m for m in heavy if m in sys.modules];"
        "print(heavy)"
    )
    t0 = time.time()
    env = airflow_environment(make_settings(PROJECT_ROOT / "warehouse"), base=dict(os.environ))
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert time.time() - t0 < 60
