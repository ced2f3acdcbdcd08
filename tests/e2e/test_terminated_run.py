"""A supervisor's SIGTERM to `nightrec bootstrap` stops the whole run: Airflow, the running task and its spark-submit.

Apart from test_nightly_dag_runs.py (it needs none of its nights), so the suite's second process can run it while the
first builds them."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from nightrec.config import PROJECT_ROOT
from nightrec.storage import SUCCESS_FILE
from tests.e2e.runs import alerts, cmdline, env_for

pytestmark = [pytest.mark.e2e, pytest.mark.spark]


def test_a_terminated_run_takes_airflow_and_spark_submit_down_with_it(tmp_path):
    """A supervisor stops `nightrec bootstrap` with SIGTERM to the command, not to its children: the signal must reach
    `airflow dags test`, and through it the running spark-submit, so nothing goes on writing the warehouse."""
    import psutil

    proc = subprocess.Popen(
        [sys.executable, "-m", "nightrec_app.cli", "bootstrap"],
        cwd=PROJECT_ROOT,
        env=env_for(tmp_path / "warehouse", tmp_path / "airflow"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "starting task_id=ingest_events" in line:
                break
        else:
            pytest.fail(f"the bootstrap ended before ingest (exit {proc.wait()})")
        wrapper = psutil.Process(proc.pid)
        deadline = time.monotonic() + 180
        while not any("SparkSubmit" in cmdline(c) for c in wrapper.children(recursive=True)):
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
    # and the stopped run is on record, not shown as running
    status = subprocess.run(
        [sys.executable, "-m", "nightrec_app.cli", "status"],
        cwd=PROJECT_ROOT,
        env=env_for(warehouse, tmp_path / "airflow"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "running" not in status.split("latest attempt", 1)[1], status
    # Airflow killed the running task on the way down, and its failure callback recorded a failure of ingest; the
    # command then records the days as stopped, naming the signal
    assert "STOPPED" in status and "FAILED:" not in status, status
    assert "was STOPPED (in ingest_events): `airflow dags test bootstrap" in status, status
    assert "was stopped by SIGTERM" in status, status
    stopped = [e for e in alerts(warehouse) if e["event"] == "run_stopped"]
    assert len(stopped) == 1 and "stopped by SIGTERM" in stopped[0]["why"], alerts(warehouse)
