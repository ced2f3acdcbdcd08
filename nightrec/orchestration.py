"""Task wiring shared by the nightly and bootstrap DAGs: land -> ingest -> sequences -> record.

Both DAGs run the same job CLIs; they differ only in the day range [start, end) they pass. The DAG files in
dags/ call :func:`pipeline` inside their ``with DAG(...)`` block. Airflow is imported inside the functions so
the core package stays importable without it; the jobs' heavy imports happen inside the tasks, at run time.
"""

from __future__ import annotations

from typing import Any

from nightrec.config import PROJECT_ROOT, Settings


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


def pipeline(settings: Settings, start: str, end: str) -> None:
    """Add land -> ingest_events -> build_sequences -> record_run to the DAG being defined."""
    from airflow.sdk import task

    @task(task_id="land")
    def land(start: str, end: str) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from nightrec.errors import NothingToProcess
        from nightrec.tasks import land_days

        try:
            return land_days(start, end)
        except NothingToProcess as exc:  # a run past the data: skip it and everything after it
            raise AirflowSkipException(str(exc)) from exc

    @task(task_id="record_run")
    def record(start: str, end: str, airflow_dag: str, airflow_run: str) -> dict:
        from nightrec.tasks import record_run

        return record_run(start, end, airflow_dag, airflow_run)

    (
        land(start, end)
        >> spark_job(settings, "ingest_events", start, end)
        >> spark_job(settings, "build_sequences", start, end)
        >> record(start, end, "{{ dag.dag_id }}", "{{ run_id }}")
    )
