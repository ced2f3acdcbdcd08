"""The environment Airflow, its tasks and spark-submit run in, derived from the settings (one place)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from nightrec.config import PROJECT_ROOT, Settings
from nightrec.errors import NightrecError, RunStopped
from nightrec.logs import PROJECT_LOGGERS

VENV_BIN = Path(sys.executable).parent


def airflow_environment(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment variables for `airflow` commands: Airflow's own (home, DAG folder, metadata DB, the Spark
    connection), Spark's, and the settings' (:meth:`Settings.environment`) for the tasks."""
    env = dict(os.environ if base is None else base)
    home = settings.airflow.home
    conn = {
        "conn_type": "spark",
        "host": settings.spark.master,
        "extra": {"spark-binary": "spark-submit", "deploy-mode": "client"},
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
            # the deployment's own URL (it holds the password: environment only) wins over the profile's
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
            or settings.airflow.sql_alchemy_conn
            or f"sqlite:///{home}/airflow.db",
            "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
            f"AIRFLOW_CONN_{settings.airflow.spark_conn_id.upper()}": json.dumps(conn),
            # Spark binds the loopback interface and runs this virtual environment's Python on both sides.
            "SPARK_LOCAL_IP": env.get("SPARK_LOCAL_IP", "127.0.0.1"),
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            **settings.environment(),  # the tasks and spark-submit load the same settings
        }
    )
    if settings.airflow.executor:
        env["AIRFLOW__CORE__EXECUTOR"] = settings.airflow.executor
    async_url = async_metadata_url(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    if async_url and not env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"):
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] = async_url
    return env


def async_metadata_url(url: str) -> str | None:
    """Airflow 3 also opens its metadata database asynchronously and, for any Postgres URL, picks the asyncpg driver,
    which the lock does not hold: psycopg 3 (the project's Postgres driver) serves both."""
    prefix = "postgresql+psycopg://"
    return "postgresql+psycopg_async://" + url[len(prefix) :] if url.startswith(prefix) else None


# Airflow's own lines of a `dags test` log worth showing while it runs: task starts and ends, what a task returned,
# the run's end, failures.
AIRFLOW_MARKERS = (
    "[DAG TEST] starting task_id",
    "[DAG TEST] end task",
    "Returned value was",
    "DagRun Finished",
    "ERROR",
    "Traceback",
    "Error:",
)
# The project's own progress: a record of one of its loggers, as Airflow renders a task's record ("... [training.run]")
# or as a Spark job prints it through spark-submit ("spark_jobs.ingest_events: ...").
_PROJECT_RECORD = re.compile(rf"\b(?:{'|'.join(PROJECT_LOGGERS)})(?:\.\w+)+(?:\]|: )")


def is_progress(line: str) -> bool:
    """Whether a line of a `dags test` log is shown while it runs (the whole log is kept in a file)."""
    return bool(_PROJECT_RECORD.search(line)) or any(m in line for m in AIRFLOW_MARKERS)


# A structured log record starts with its timestamp; an exception's own message starts a line with its class.
_LOG_RECORD = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Failed|Failure)\w*: ")


def show(text: str, stream: TextIO) -> None:
    """Print a line of a run's progress. A reader that went away (`nightrec nightly | head`, a supervisor that died)
    stops the showing, never the run: a BrokenPipeError here used to leave `airflow dags test` running unread (so
    blocked once its pipe filled) and the command exit 0 with its days still marked running. The whole output is in
    the run's log file either way."""
    try:
        print(text, file=stream, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())  # later writes, and the exit's flush, go nowhere


@contextmanager
def forwarding_termination(proc: subprocess.Popen) -> Iterator[list[int]]:
    """While `proc` runs, SIGTERM and SIGHUP sent to this process are passed on to it, and this process waits for it.

    A supervisor (systemd, a CI timeout, a test) stops `nightrec nightly` by signalling it, not its children; without
    this the `airflow dags test` child, its tasks and their spark-submit would go on writing the warehouse after the
    command had ended. Ctrl-C needs nothing: the terminal sends SIGINT to the whole foreground process group.
    Yields the list of the signals passed on (the caller's error message names them).
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield received
        return

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_airflow(settings: Settings, args: list[str], check: bool = True, quiet: bool = False) -> int:
    """Run one `airflow` CLI command in the project's environment.

    :param quiet: write the full output to ``<airflow home>/logs/cli/<command>.log`` and show only progress
        lines (and the log's tail on failure); otherwise stream everything.
    """
    settings.airflow.home.mkdir(parents=True, exist_ok=True)
    cmd = [str(VENV_BIN / "airflow"), *args]
    env = airflow_environment(settings)
    if not quiet:
        with subprocess.Popen(cmd, env=env, cwd=PROJECT_ROOT) as proc, forwarding_termination(proc) as signals:
            rc = proc.wait()
    else:
        log_dir = settings.airflow.home / "logs" / "cli"
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / ("-".join(a.replace("/", "_").replace(":", "") for a in args[:4]) + ".log")
        tail: list[str] = []
        errors: list[str] = []  # the failing tasks' exception messages, whole (they can span many lines)
        in_error = False
        with (
            log_path.open("w") as log,
            subprocess.Popen(
                cmd, env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            ) as proc,
            forwarding_termination(proc) as signals,
        ):
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                if _LOG_RECORD.match(line):
                    in_error = False
                elif _EXCEPTION_LINE.match(line):
                    in_error = True
                    errors.append("")
                if in_error:
                    errors[-1] += line
                if "No tasks to run. unrunnable tasks" not in line:  # Airflow repeats it every second
                    tail = [*tail[-29:], line]
                if is_progress(line):
                    show("   " + _shorten(line), sys.stdout)
            rc = proc.wait()
        if rc != 0:
            show(f"--- last lines of {log_path} ---\n{''.join(tail)}", sys.stderr)
            if errors and not check:  # with check, the raised error carries it
                show(f"--- why it failed ---\n{errors[-1].rstrip()}", sys.stderr)
    if check and rc != 0:
        if signals:  # stopped from outside: that is the reason, whatever the tasks printed as they went down
            names = ", ".join(signal.Signals(n).name for n in dict.fromkeys(signals))
            raise RunStopped(f"`airflow {' '.join(args)}` was stopped by {names} (exit code {rc})")
        reason = f":\n{errors[-1].rstrip()}" if quiet and errors else ""
        raise NightrecError(f"`airflow {' '.join(args)}` failed with exit code {rc}{reason}")
    return rc


def _shorten(line: str) -> str:
    """Drop Airflow's structlog prefix and suffix (level, logger name, source location) around a message."""
    text = line.rstrip()
    if "[info     ] " in text:
        text = text.split("[info     ] ", 1)[1]
    return _LOGGER_SUFFIX.sub("", text.split(" loc=", 1)[0])


_LOGGER_SUFFIX = re.compile(r" \[[\w.]+\]$")


def ensure_metadata_db(settings: Settings) -> None:
    """Create or upgrade the Airflow metadata DB and the pools the DAGs name (idempotent; about 5 s on SQLite)."""
    run_airflow(settings, ["db", "migrate"])
    a = settings.airflow
    why = "dbt models: one writer at a time on the DuckDB file and the spark target's embedded metastore"
    run_airflow(settings, ["pools", "set", a.dbt_pool, str(a.dbt_pool_slots), why], quiet=True)
