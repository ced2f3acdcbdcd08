"""Crash injection for the fault tests: a process kills itself the moment it would publish a chosen target.

``NIGHTREC_KILL_AT_COMMIT=<glob>``: a process about to make a path that matches the glob visible (a partition
swapped into place, a JSON or text document replaced; see :mod:`nightrec.storage`) sends itself SIGKILL first.
Nothing runs after that: no ``finally``, no cleanup, no Airflow callback in that process, as when the kernel's OOM
killer or a supervisor's ``kill -9`` ends a task. It is the hardest moment for a reader's guarantee: the new content
is complete in a hidden temporary beside the target, and readers must still see the previous version.

Unset in every normal run (it costs one environment lookup per publication). The fault tests set it on a task, a
spark-submit or a whole ``nightrec backfill`` and then check what is visible and that a retry succeeds.
"""

from __future__ import annotations

import fnmatch
import os
import signal
import sys
from pathlib import Path

KILL_AT_COMMIT = "NIGHTREC_KILL_AT_COMMIT"


def before_commit(target: Path) -> None:
    """Called by every publication just before its rename; kills this process when the target matches."""
    pattern = os.environ.get(KILL_AT_COMMIT)
    if pattern and fnmatch.fnmatchcase(str(target), pattern):
        sys.stderr.write(f"{KILL_AT_COMMIT}={pattern}: killing process {os.getpid()} before it publishes {target}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
