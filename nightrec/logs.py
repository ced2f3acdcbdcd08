"""Progress output through standard logging.

Every module logs to ``logging.getLogger(__name__)``; its INFO records are the progress lines a user watches (one per
step, with counts and seconds), its WARNINGs what needs a look. Importing a module configures nothing: inside an
Airflow task the records go to the task's log like Airflow's own, and the entry points that own a terminal (a Spark
job under spark-submit, the command line) call :func:`show_progress` to print them.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

# The packages whose records are the project's progress (nightrec_app's run_airflow shows them from a run's log).
PROJECT_LOGGERS = ("nightrec", "nightrec_app", "spark_jobs", "training")
FORMAT = "[%(asctime)s] %(name)s: %(message)s"


class _ProgressHandler(logging.StreamHandler):
    """Marks the handler show_progress installed, so a second call adds none."""


def show_progress(level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Print the project's records at ``level`` and above on ``stream`` (stdout), one timestamped line each."""
    handler = _ProgressHandler(stream or sys.stdout)
    handler.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not any(isinstance(h, _ProgressHandler) for h in logger.handlers):
            logger.addHandler(handler)
