"""Task wiring shared by the nightly and bootstrap DAGs.

land -> validate_raw -> attributes -> ingest -> validate_bronze -> sequences -> dbt -> validate_marts -> publish
-> feast_apply -> feast_materialize -> [nightly only: train -> build_candidates -> train_ranker -> score_topk ->
publish_topk -> segments (train_consumer_encoder -> build_segments -> build_audiences -> publish_segments) ->
apply_retention] -> record.

Both DAGs run the same job CLIs; they differ only in the day range [start, end) they pass. The DAG files in
dags/ call :func:`pipeline` inside their ``with DAG(...)`` block. Airflow is imported inside the functions so
the core package stays importable without it; the jobs' heavy imports happen inside the tasks, at run time.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from nightrec.config import PROJECT_ROOT, Settings
from nightrec.warehouse import Warehouse

NIGHTLY_DAG, BOOTSTRAP_DAG = "nightly", "bootstrap"  # the dag_ids of dags/nightly.py and dags/bootstrap.py
FORGET_DAG = "forget_users"  # dags/forget_users.py

# What a user's own DAG can be scheduled on (Airflow's data-aware scheduling): each is the outlet of the task that
# publishes it, so an event means the night's marts, online features or lists are in place.
PUBLISHED = {
    "marts": ("publish_marts", Warehouse.mart_exports),
    "features": ("feast_materialize", Warehouse.feast),
    "topk": ("publish_topk", Warehouse.serving_topk),
    "segments": ("segments.publish_segments", lambda wh: wh.segments("membership")),
}


def assets(settings: Settings) -> dict[str, Any]:
    """The Airflow Assets the pipeline publishes, named ``nightrec_<source>_<what>``, their URIs the warehouse paths."""
    from airflow.sdk import Asset

    wh = Warehouse.of(settings)
    return {
        what: Asset(name=f"nightrec_{settings.source}_{what}", uri=path(wh).as_uri(), group="nightrec")
        for what, (_, path) in PUBLISHED.items()
    }


def task_defaults(settings: Settings) -> dict[str, Any]:
    """The ``default_args`` of both DAGs: retries, a failure callback that records the failed task and its error
    in the run manifests of the run's days, so `nightrec status` and `report` show the failure afterwards, and sends
    it to the notifiers of ``alerts.notifiers``, and a hook that makes SIGTERM stop the running task."""
    return {
        "retries": settings.airflow.task_retries,
        "retry_delay": timedelta(seconds=settings.airflow.retry_delay_seconds),
        "on_failure_callback": record_failure,
        "pre_execute": stop_when_terminated,
    }


_TERMINATED: list[str] = []  # the termination signals this process received (`dags test` runs every task in it)


def stop_when_terminated(context: Any) -> None:
    """Every task's ``pre_execute`` hook: SIGTERM ends the running task as failed, and no later task starts.

    Airflow's own SIGTERM handler in the task process only calls the operator's ``on_kill`` and leaves the rest to
    a supervisor that kills the process a grace period later. `airflow dags test` (what `nightrec nightly` runs) has
    no such supervisor: a Python task (train, the quality checks) ran on to its end after SIGTERM, and so did every
    task after it. Here the signal still calls ``on_kill`` (SparkSubmitOperator kills its spark-submit), then raises
    Airflow's AirflowTaskTerminated in the task: a BaseException, which the task's ``except Exception`` blocks let
    through, and which fails the task without retries, so its failure callback records it and the run ends. A signal
    that comes between two tasks (this handler stays installed until the next task's runner replaces it) raises
    nothing in Airflow's own code: the next task refuses to start, and its failure is what the run records.
    """
    import signal

    from airflow.sdk.exceptions import AirflowTaskTerminated

    if _TERMINATED:
        raise AirflowTaskTerminated(f"the run was stopped by {_TERMINATED[0]} before this task started")
    task = context["ti"].task
    execute = type(task).execute.__code__

    def stop(signum: int, frame: Any) -> None:
        _TERMINATED.append(signal.Signals(signum).name)
        while frame is not None and frame.f_code is not execute:
            frame = frame.f_back
        if frame is not None:  # the task is still running: interrupt it
            task.on_kill()
            raise AirflowTaskTerminated(f"stopped by {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, stop)


def record_failure(context: Any) -> None:
    """Airflow's on_failure_callback (it runs in the task's process after the task failed for good)."""
    from nightrec_app import tasks

    run, params = context["dag_run"], context.get("params") or {}
    if params.get("end"):  # the bootstrap DAG: its range's last day
        day = date.fromisoformat(str(params["end"])) - timedelta(days=1)
    else:  # the nightly DAG: its data interval's day
        day = context["data_interval_start"].date()
    task_id, error = context["ti"].task_id, context.get("exception")
    ctx = tasks.context()
    tasks.record_failure(ctx.warehouse, run.dag_id, run.run_id, task_id, error, day.isoformat())
    tasks.alert_failure(ctx.settings, run.dag_id, run.run_id, task_id, error, day.isoformat())


def alert_only(context: Any) -> None:
    """The failure callback of a DAG that processes no day (forget_users): the notifiers hear of it, no run manifest
    records it."""
    from nightrec_app import tasks

    run, task_id = context["dag_run"], context["ti"].task_id
    tasks.alert_failure(tasks.context().settings, run.dag_id, run.run_id, task_id, context.get("exception"), None)


def spark_job(settings: Settings, job: str, start: str, end: str) -> Any:
    """A SparkSubmitOperator running ``spark_jobs/<job>.py --start <start> --end <end>``."""
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    return SparkSubmitOperator(
        task_id=job,
        conn_id=settings.airflow.spark_conn_id,
        application=str(PROJECT_ROOT / "spark_jobs" / f"{job}.py"),
        application_args=["--source", settings.source, "--start", start, "--end", end],
        name=f"nightrec-{job}",
        conf=settings.spark.all_conf(),
        driver_memory=settings.spark.driver_memory,
        verbose=False,
    )


def dbt_task_group(settings: Settings, start: str, end: str) -> Any:
    """The dbt project as a Cosmos task group: one task per model (its tests run with it), rebuilding [start, end).

    Rendered from the manifest `dbt parse` wrote at install (no dbt call at DAG parse time). Tasks run one at a
    time because the DuckDB target is a single-writer file. dbt runs in the task's process (dbtRunner), not as a
    subprocess per model: a third of the time (decision 9).
    """
    from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
    from cosmos.constants import InvocationMode, LoadMode, TestBehavior

    from nightrec.dbt_runner import DBT_DIR, MANIFEST

    return DbtTaskGroup(
        group_id="dbt",
        project_config=ProjectConfig(
            dbt_project_path=DBT_DIR,
            manifest_path=MANIFEST,
            project_name="nightrec",
            env_vars=settings.environment(),
        ),
        profile_config=ProfileConfig(
            profile_name="nightrec", target_name=settings.dbt_target, profiles_yml_filepath=DBT_DIR / "profiles.yml"
        ),
        execution_config=ExecutionConfig(invocation_mode=InvocationMode.DBT_RUNNER),
        render_config=RenderConfig(
            load_method=LoadMode.DBT_MANIFEST,
            test_behavior=TestBehavior.BUILD,
            should_detach_multiple_parents_tests=True,  # e.g. relationships: run once both tables exist
            # models over the published top-k and over the segments: built by publish_topk and publish_segments
            exclude=["tag:serving", "tag:segments"],
        ),
        operator_args={
            "install_deps": False,
            # one model at a time: the DuckDB file (and the spark target's embedded metastore) takes one writer; a
            # real scheduler would otherwise start the group's independent models together (dags test never does)
            "pool": settings.airflow.dbt_pool,
            # dbt unit tests check model logic on fixed inputs: they run in CI (`make test`), not every night, as dbt
            # recommends; their fixtures assume a source with at least two levels.
            "dbt_cmd_flags": ["--exclude-resource-type", "unit_test"],
            "vars": {
                "warehouse_root": str(settings.warehouse_root),
                "max_level": _max_level(settings),
                "start_ds": start,
                "end_ds": end,
            },
        },
    )


def _max_level(settings: Settings) -> int:
    from nightrec.adapters import load_adapter

    return load_adapter(settings.source).max_level


def pipeline(settings: Settings, start: str, end: str, train: bool = True) -> None:
    """Add the pipeline's tasks to the DAG; a failed critical quality check stops everything after it.

    :param train: add the `train`, `build_candidates`, `train_ranker`, `score_topk` and `publish_topk` tasks and the
        `segments` group (the nightly DAG). The bootstrap DAG builds the history without them: the nightly run that
        follows it trains on that history (one training per night).
    """
    from airflow.sdk import task

    outlets = assets(settings)

    @task(task_id="land")
    def land(start: str, end: str, airflow_dag: str, airflow_run: str) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from nightrec.errors import NothingToProcess
        from nightrec_app import tasks

        try:
            return tasks.land_days(tasks.context(start, end), airflow_dag, airflow_run)
        except NothingToProcess as exc:  # a run past the data: skip it and everything after it
            raise AirflowSkipException(str(exc)) from exc

    @task(task_id="record_run")
    def record(start: str, end: str, airflow_dag: str, airflow_run: str) -> dict:
        from nightrec_app import tasks

        return tasks.record_run(tasks.context(start, end), airflow_dag, airflow_run)

    def validate(boundary: str) -> Any:
        @task(task_id=f"validate_{boundary}")
        def run_checks(start: str, end: str, airflow_dag: str, airflow_run: str) -> dict:
            from nightrec_app import tasks

            return tasks.validate_boundary(tasks.context(start, end), boundary, airflow_dag, airflow_run)

        return run_checks(start, end, "{{ dag.dag_id }}", "{{ run_id }}")

    @task(task_id="ingest_attributes")
    def attributes() -> dict:
        from nightrec_app import tasks

        return tasks.ingest_attribute_snapshots(tasks.context())

    @task(task_id="feast_apply")
    def feast_apply() -> dict:
        from nightrec_app import tasks

        return tasks.feast_apply(tasks.context())

    @task(task_id="feast_materialize", outlets=[outlets["features"]])
    def feast_materialize(start: str, end: str) -> dict:
        from nightrec_app import tasks

        return tasks.feast_materialize(tasks.context(start, end))

    @task(task_id="train")
    def train_models(start: str, end: str) -> dict:
        from nightrec_app import tasks

        return tasks.train_models(tasks.context(start, end))

    @task(task_id="train_ranker")
    def train_ranker(start: str, end: str) -> dict:
        from nightrec_app import tasks

        return tasks.train_ranker(tasks.context(start, end))

    @task(task_id="train_consumer_encoder")
    def train_consumer_encoder(start: str, end: str) -> dict:
        from nightrec_app import tasks

        return tasks.train_consumer_encoder(tasks.context(start, end))

    @task(task_id="build_audiences")
    def build_audiences(start: str, end: str) -> dict:
        from nightrec_app import tasks

        return tasks.build_audiences(tasks.context(start, end))

    @task(task_id="publish_segments", outlets=[outlets["segments"]])
    def publish_segments(start: str, end: str) -> dict:
        from nightrec_app import tasks

        return tasks.publish_segments(tasks.context(start, end))

    @task(task_id="apply_retention")
    def apply_retention(start: str, end: str) -> dict:
        from nightrec_app import tasks

        return tasks.apply_retention(tasks.context(start, end))

    @task(task_id="publish_topk", outlets=[outlets["topk"]])
    def publish_topk(start: str, end: str) -> dict:
        from nightrec_app import tasks

        return tasks.publish_topk(tasks.context(start, end))

    @task(task_id="publish_marts", outlets=[outlets["marts"]])
    def publish() -> dict:
        from nightrec_app import tasks

        return tasks.publish_marts(tasks.context())

    served = (
        land(start, end, "{{ dag.dag_id }}", "{{ run_id }}")
        >> validate("raw")
        >> attributes()
        >> spark_job(settings, "ingest_events", start, end)
        >> validate("bronze")
        >> spark_job(settings, "build_sequences", start, end)
        >> dbt_task_group(settings, start, end)
        >> validate("marts")
        >> publish()
        >> feast_apply()
        >> feast_materialize(start, end)
    )
    if train:
        from airflow.sdk import TaskGroup

        lists = publish_topk(start, end)
        (
            served
            >> train_models(start, end)
            >> spark_job(settings, "build_candidates", start, end)
            >> train_ranker(start, end)
            >> spark_job(settings, "score_topk", start, end)
            >> lists
        )
        # The consumer segments beside the lists: the encoder and the segments job read the night's sequences and
        # attributes and write only their own outputs (the lists read night - 2's segments, nightrec.segments
        # .membership_night), so a scheduler runs them while the lists are made. What reads or writes the analysts'
        # single-writer DuckDB file waits: the audiences' seed predicates until publish_topk has built the lists'
        # mart, then the segment marts. A failure in this group leaves the night's lists published.
        with TaskGroup(group_id="segments") as segments_group:
            encoder = train_consumer_encoder(start, end)
            audiences = build_audiences(start, end)
            encoder >> spark_job(settings, "build_segments", start, end) >> audiences >> publish_segments(start, end)
        served >> encoder
        lists >> audiences
        # last, once every output of the night is published: what it removes is never what the night just wrote
        served = segments_group >> apply_retention(start, end)
    served >> record(start, end, "{{ dag.dag_id }}", "{{ run_id }}")
