"""A supervisor's SIGTERM to `nightrec bootstrap` stops the whole run: Airflow, the running task and its spark-submit.

Apart from test_nightly_dag_runs.py (it needs none of its nights), so the suite's second process can run it while the
first builds them."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nightrec.config import PROJECT_ROOT
from nightrec.storage import SUCCESS_FILE
from tests.e2e.runs import alerts, cmdline, env_for

pytestmark = [pytest.mark.e2e, pytest.mark.spark]


def _stopped_bootstrap(tmp_path: Path, task: str, spark_submit: bool, *days: str) -> tuple[str, str]:
    """`nightrec bootstrap` on a new warehouse, sent SIGTERM once ``task`` runs (its spark-submit's JVM, when it has
    one; else its own code, a second after Airflow's last log line before it); checks that the command ended within
    seconds, took every child down and left nothing half-written. ``days``: the bootstrap's range options (default:
    the whole history). Returns the command's remaining output and `nightrec status`."""
    import psutil

    proc = subprocess.Popen(
        # --verbose: Airflow's whole output, where its task runner's "::endgroup::" comes just before a task's code
        [sys.executable, "-m", "nightrec_app.cli", "bootstrap", *days, *(() if spark_submit else ("--verbose",))],
        cwd=PROJECT_ROOT,
        env=env_for(tmp_path / "warehouse", tmp_path / "airflow"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        started, seen = False, []
        for line in proc.stdout:
            seen.append(line)
            started = started or f"starting task_id={task}" in line
            if started and (spark_submit or "::endgroup::" in line):
                break
        else:
            pytest.fail(f"the bootstrap ended before {task} (exit {proc.wait()}):\n{''.join(seen[-40:])}")
        time.sleep(0 if spark_submit else 1)
        wrapper = psutil.Process(proc.pid)
        deadline = time.monotonic() + 180
        while spark_submit and not any("SparkSubmit" in cmdline(c) for c in wrapper.children(recursive=True)):
            assert time.monotonic() < deadline, "spark-submit's JVM did not start"
            time.sleep(0.5)
        descendants = wrapper.children(recursive=True)
        assert any("airflow" in cmdline(c) for c in descendants)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=180)
        stopping = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert stopping < 30, f"the run took {stopping:.0f}s to stop"  # within seconds, not at the job's end
    # the command returned only once its run had stopped: a supervisor may start the next one right away
    _, alive = psutil.wait_procs(descendants, timeout=1)
    assert not alive, [cmdline(p) for p in alive]
    assert "was stopped by SIGTERM" in rest, rest[-3000:]
    # nothing half-written is visible: every partition a reader can see is complete (a _SUCCESS beside its files)
    warehouse = tmp_path / "warehouse"
    visible = [
        p
        for p in warehouse.rglob("ds=*")
        if p.is_dir() and not any(part.startswith(".") for part in p.relative_to(warehouse).parts)
    ]
    zones = [p for p in visible if p.relative_to(warehouse).parts[0] in ("bronze", "silver")]
    assert all((p / SUCCESS_FILE).is_file() for p in zones), [p for p in zones if not (p / SUCCESS_FILE).is_file()]
    status = subprocess.run(
        [sys.executable, "-m", "nightrec_app.cli", "status"],
        cwd=PROJECT_ROOT,
        env=env_for(warehouse, tmp_path / "airflow"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # the stopped run is on record, not shown as running
    assert "running" not in status.split("latest attempt", 1)[1], status
    stopped = [e for e in alerts(warehouse) if e["event"] == "run_stopped"]
    assert len(stopped) == 1 and "stopped by SIGTERM" in stopped[0]["why"], alerts(warehouse)
    return rest, status


def test_a_terminated_run_takes_airflow_and_spark_submit_down_with_it(tmp_path):
    """A supervisor stops `nightrec bootstrap` with SIGTERM to the command, not to its children: the signal must reach
    `airflow dags test`, and through it the running spark-submit, so nothing goes on writing the warehouse."""
    _, status = _stopped_bootstrap(tmp_path, "ingest_events", spark_submit=True)
    # Airflow killed the running task on the way down, and its failure callback recorded a failure of ingest; the
    # command then records the days as stopped, naming the signal
    assert "STOPPED" in status and "FAILED:" not in status, status
    assert "was STOPPED (in ingest_events): `airflow dags test bootstrap" in status, status
    assert "was stopped by SIGTERM" in status, status


def test_a_terminated_run_stops_inside_a_python_task(tmp_path):
    """SIGTERM while a Python task runs (the raw checks here; `train` in a night): Airflow's own handler only calls
    the operator's on_kill, a no-op for a Python task, so under `airflow dags test` the task and every task after it
    ran on to the end. The pipeline's pre_execute hook makes the signal fail the running task instead."""
    # a month of history: checks long enough to be stopped in the middle, sooner than the whole history's
    rest, status = _stopped_bootstrap(tmp_path, "validate_raw", False, "--start", "2014-04-15", "--end", "2014-05-14")
    assert "AirflowTaskTerminated: stopped by SIGTERM" in rest  # interrupted in its code, not refused at its start
    assert "STOPPED" in status and "FAILED:" not in status, status
    assert "was STOPPED (in validate_raw): `airflow dags test bootstrap" in status, status
    assert "was stopped by SIGTERM" in status, status
