"""What the end-to-end tests share: the environment of a `nightrec` command on a test warehouse, the alerts a run
recorded, a process's command line."""

from __future__ import annotations

import json
import os
from pathlib import Path

from nightrec.config import SHORT_JOBS_JAVA_OPTIONS


def env_for(warehouse: Path, airflow_home: Path) -> dict[str, str]:
    """The environment of a `nightrec` command on ``warehouse`` with its Airflow home: local[2], the smoke profile.

    No other NIGHTREC_* variable of the test process goes along: a test that opened Feast in that process (on H&M,
    say) left its settings there (feature_store.use_settings), and a command that inherited NIGHTREC_SOURCE=hm
    refused a Tmall range with a message the test never showed."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("NIGHTREC_")},
        "NIGHTREC_WAREHOUSE_ROOT": str(warehouse),
        "NIGHTREC_AIRFLOW_HOME": str(airflow_home),
        "NIGHTREC_SPARK_MASTER": "local[2]",
        "NIGHTREC_PROFILE": "smoke",  # the local profile with one-epoch training
        # the bootstrap's quality checks over the 1x history in two chunks, not nine (the marts' check: 42 s -> 17 s
        # alone); checking in chunks is tested on its own (tests/integration/test_quality_checks.py)
        # and the JVM options for short Spark jobs, as in every test (decision 52)
        "NIGHTREC_SET": f"quality.check_chunk_days=62; spark.java_options={SHORT_JOBS_JAVA_OPTIONS}",
    }


def alerts(warehouse: Path) -> list[dict]:
    """The events the default notifier (alerts.notifiers: a file in the warehouse) recorded."""
    path = warehouse / "alerts" / "alerts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def cmdline(process) -> str:
    import psutil

    try:
        return " ".join(process.cmdline())
    except psutil.Error:  # it ended meanwhile
        return ""
