"""Interrupted runs: `nightrec backfill --resume` goes on from the first night that did not succeed, judged by each
day's own run; a run stopped from outside is recorded as stopped, not as running or as a failure of its task."""

from __future__ import annotations

import time
from datetime import date, timedelta
from pathlib import Path

from nightrec.run_manifest import begin_attempt, end_attempt, latest_attempt, own_run, stop_attempts
from nightrec.run_report import attempt_lines, attempt_mark
from nightrec.storage import utc_now_iso
from nightrec.warehouse import Warehouse
from nightrec_app import cli
from nightrec_app.orchestration import BOOTSTRAP_DAG, NIGHTLY_DAG
from tests.conftest import make_settings

D = [date(2014, 8, 12) + timedelta(days=i) for i in range(5)]  # 08-12 .. 08-16


def _night(wh: Warehouse, day: date, run_id: str, state: str | None, dag: str = NIGHTLY_DAG) -> None:
    """A run of `day` with two days of lookback, ended in ``state`` (None: still running, or killed)."""
    begin_attempt(wh, [day - timedelta(days=2), day - timedelta(days=1), day], dag, run_id)
    if state is not None:
        end_attempt(wh, run_id, state, task="ingest_events" if state == "failed" else None)


def test_a_run_that_only_looks_back_over_a_day_does_not_change_its_own_run(tmp_path: Path):
    wh = Warehouse(tmp_path, "tmall_brand")
    _night(wh, D[2], "night_14", "success")
    _night(wh, D[3], "night_15", "failed")
    assert own_run(wh, D[2])["run_id"] == "night_14" and own_run(wh, D[2])["state"] == "success"
    assert own_run(wh, D[3])["state"] == "failed"
    assert own_run(wh, D[1]) is None  # only looked back over


def test_resume_starts_at_the_first_night_not_done_and_redoes_every_later_one(tmp_path: Path, capsys):
    settings = make_settings(tmp_path)
    wh = Warehouse(tmp_path, settings.source)
    _night(wh, D[0], "bootstrapped", "success", dag=BOOTSTRAP_DAG)  # a bootstrap's last day is no night
    _night(wh, D[1], "night_13", "success")
    _night(wh, D[2], "night_14", "failed")
    _night(wh, D[3], "night_15", "success")  # succeeded on top of a failed night: redone after it
    _night(wh, D[4], "night_16", None)  # killed: no callback ever closed it
    assert cli._unfinished(settings, D[1:]) == D[2:]
    assert "day 2014-08-13 skipped, its night succeeded in night_13" in capsys.readouterr().out
    assert cli._unfinished(settings, D) == D  # the bootstrap's day is not a finished night
    assert cli._unfinished(settings, D[4:]) == D[4:]
    _night(wh, D[2], "night_14_again", "success")
    _night(wh, D[4], "night_16_again", "success")
    assert cli._unfinished(settings, D[1:]) == []
    assert "nothing to resume" in capsys.readouterr().out


def test_a_stopped_run_is_recorded_as_stopped_and_an_older_run_is_left_alone(tmp_path: Path):
    wh = Warehouse(tmp_path, "tmall_brand")
    _night(wh, D[1], "night_13", "failed")  # an older run's own failure: not this command's to rewrite
    time.sleep(1.1)  # attempts carry times to the second
    since = utc_now_iso()
    _night(wh, D[3], "night_15", "failed")  # SIGTERM: Airflow killed the task, whose callback recorded a failure
    why = "`airflow dags test nightly 2014-08-16` was stopped by SIGTERM (exit code 1)"
    assert stop_attempts(wh, D, why, since, signalled=True) == [D[1], D[2], D[3]]  # night_15's days 13..15
    attempt = latest_attempt(wh, D[3])
    assert (attempt["state"], attempt["failed_task"], attempt_mark(attempt)) == ("stopped", "ingest_events", "STOPPED")
    assert attempt_lines(attempt)[0].startswith("STOPPED before it ended (in ingest_events): nightly night_15")
    assert attempt_lines(attempt)[1] == why
    assert own_run(wh, D[3])["state"] == "stopped"
    _night(wh, D[4], "night_16", None)  # died without a word: still marked running
    assert stop_attempts(wh, D, "exit code -9", since, signalled=False) == [D[2], D[3], D[4]]
    assert latest_attempt(wh, D[4])["state"] == "stopped"
    _night(wh, D[4], "night_16_again", "failed")  # a task's own failure, not a signal: it stays a failure
    assert stop_attempts(wh, D, "exit code 1", since, signalled=False) == []
    assert latest_attempt(wh, D[4])["state"] == "failed"
