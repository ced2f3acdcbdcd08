"""Crash injection for the fault tests: a process kills itself the moment it would publish a chosen target.

``NIGHTREC_KILL_AT_COMMIT=<glob>[;<glob>...]``: a process about to make a path that matches one of the globs visible
(a partition swapped into place, a JSON or text document replaced; see :mod:`nightrec.storage`) sends itself SIGKILL
first. Nothing runs after that: no ``finally``, no cleanup, no Airflow callback in that process, as when the kernel's
OOM killer or a supervisor's ``kill -9`` ends a task. It is the hardest moment for a reader's guarantee: the new
content is complete in a hidden temporary beside the target, and readers must still see the previous version.

``NIGHTREC_KILL_ONCE=<directory>`` as well: each glob kills once. Before dying, the process records what readers see
at that moment (the target's version, the hidden temporaries beside it) in ``<directory>/<digest of the glob>.json``;
a later process that meets the same glob finds the record and publishes. That is how a whole run under a scheduler
tests its retries: every chosen task is killed as it publishes and its retry, started by Airflow, must succeed.

Unset in every normal run (it costs one environment lookup per publication). The fault tests set it on a task, a
spark-submit, a whole ``nightrec backfill`` or a scheduler's services, and then check what is visible and that a
retry succeeds.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from nightrec.hidden_siblings import hidden_siblings

KILL_AT_COMMIT = "NIGHTREC_KILL_AT_COMMIT"
KILL_ONCE = "NIGHTREC_KILL_ONCE"


def before_commit(target: Path) -> None:
    """Called by every publication just before its rename; kills this process when the target matches."""
    patterns = os.environ.get(KILL_AT_COMMIT)
    if not patterns:
        return
    for pattern in filter(None, patterns.split(";")):
        if not fnmatch.fnmatchcase(str(target), pattern):
            continue
        once = os.environ.get(KILL_ONCE)
        if once:
            record = kill_record(Path(once), pattern)
            if record.exists():
                continue  # killed once already: this is the retry
            _write_record(record, pattern, target)
        sys.stderr.write(f"{KILL_AT_COMMIT}={pattern}: killing process {os.getpid()} before it publishes {target}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def kill_record(directory: Path, pattern: str) -> Path:
    """Where a ``NIGHTREC_KILL_ONCE`` kill at ``pattern`` records what readers saw."""
    return directory / f"{hashlib.sha256(pattern.encode()).hexdigest()[:16]}.json"


def published_version(target: Path) -> tuple[int, int] | None:
    """What tells one published version of ``target`` from another: its inode and modification time (a document
    rewritten several times may get an earlier inode number back, and a retry may write the same bytes); None when
    nothing is published there."""
    try:
        st = target.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def what_readers_see(target: Path) -> dict[str, Any]:
    """The published version at ``target`` (:func:`published_version`) and the new versions hidden beside it."""
    version = published_version(target)
    return {"version": list(version) if version else None, "hidden": hidden_siblings(target, ("tmp",))}


def _write_record(record: Path, pattern: str, target: Path) -> None:
    # written in place: the kill comes after the write returns, and only a later process (the retry) reads it
    record.parent.mkdir(parents=True, exist_ok=True)
    body = {"pattern": pattern, "target": str(target), "pid": os.getpid(), **what_readers_see(target)}
    record.write_text(json.dumps(body))
