"""The forget_users DAG: remove users from every zone on request (right to be forgotten), triggered by hand.

Trigger it with the ids to forget (param ``user_ids``, a list of strings); it runs one task, `forget_users`, which
does what `nightrec forget --user ...` does (nightrec/forget.py): the raw files rewritten without their rows, their
rows removed from every table, the marts, the lists, the segments and the Feast online store, and their keys
recorded so that no later delivery brings them back. Trigger it between nightly runs:

    airflow dags trigger forget_users -c '{"user_ids": ["10000250", "10001000"]}'
    nightrec airflow dags test forget_users -c '{"user_ids": ["10000250"]}'     # in the foreground
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from nightrec.adapters import load_adapter
from nightrec.config import load_settings
from nightrec_app.orchestration import FORGET_DAG, alert_only, stop_when_terminated

settings = load_settings()
adapter = load_adapter(settings.source)

with DAG(
    dag_id=FORGET_DAG,
    description=f"Forget users of {adapter.name}: every zone, the marts, Feast and the lists",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": settings.airflow.task_retries,
        "on_failure_callback": alert_only,
        "pre_execute": stop_when_terminated,
    },
    params={
        "user_ids": Param([], type="array", items={"type": "string"}, minItems=1, description="the ids to forget"),
        "dry_run": Param(False, type="boolean", description="only count what would be removed"),
    },
    tags=["nightrec", adapter.name, "privacy"],
):

    @task(task_id="forget_users")
    def forget_users(params: dict | None = None) -> dict:
        from nightrec_app import tasks

        params = params or {}
        summary = tasks.forget_users(tasks.context(), list(params["user_ids"]), dry_run=bool(params.get("dry_run")))
        return {**summary, "not_found": len(summary["not_found"])}  # XCom keeps no id

    forget_users()
