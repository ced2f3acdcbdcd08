"""The bootstrap DAG: the same jobs as the nightly DAG over a whole history range, one Spark start per job.

Trigger it once before the nightly DAG starts (params ``start`` and ``end``: the half-open day range
[start, end); defaults: the source's first day up to its ``nightly_start``):

    nightrec bootstrap                       # or:
    airflow dags test bootstrap -c '{"start": "2014-04-15", "end": "2014-08-14"}'
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from nightrec.adapters import load_adapter
from nightrec.config import load_settings
from nightrec_app.orchestration import BOOTSTRAP_DAG, pipeline, task_defaults

settings = load_settings()
adapter = load_adapter(settings.source)

with DAG(
    dag_id=BOOTSTRAP_DAG,
    description=f"Build the warehouse of {adapter.name} over its history in one pass per job",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    default_args=task_defaults(settings),  # retries; a failed task is recorded in the days' run manifests
    params={
        "start": Param(
            adapter.history_start.isoformat(),
            type="string",
            format="date",
            description="first day to build (YYYY-MM-DD)",
        ),
        "end": Param(
            adapter.nightly_start.isoformat(),
            type="string",
            format="date",
            description="day after the last one to build (exclusive)",
        ),
    },
    tags=["nightrec", adapter.name],
):
    pipeline(settings, start="{{ params.start }}", end="{{ params.end }}", train=False)  # the first night trains
