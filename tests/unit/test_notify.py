"""Failure notifications (nightrec/notify.py) and "complete through D" markers (nightrec/completeness.py)."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import date
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import pytest

from nightrec.completeness import complete_through, mark_complete
from nightrec.config import AlertSettings, load_settings
from nightrec.errors import ConfigError, QualityCheckFailed
from nightrec.notify import notify
from nightrec.warehouse import Warehouse
from tests.servers import free_port

RECEIVED: list[dict] = []


def collect(event: dict) -> None:
    """A user's own notifier (``python:tests.unit.test_notify:collect``)."""
    RECEIVED.append(event)


def _settings(tmp_path: Path, *notifiers: str):
    base = load_settings("local", env={}).with_overrides(warehouse_root=tmp_path)
    return base.with_overrides(alerts=replace(base.alerts, notifiers=notifiers, webhook_timeout_seconds=5))


class _Hook(BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        _Hook.bodies.append({"type": self.headers["Content-Type"], "event": json.loads(self.rfile.read(length))})
        self.send_response(500 if "fail" in self.path else 204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def webhook():
    server = HTTPServer(("127.0.0.1", free_port()), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Hook.bodies.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_an_event_reaches_the_file_the_webhook_and_a_users_function(tmp_path, webhook):
    RECEIVED.clear()
    s = _settings(
        tmp_path, "file:alerts/alerts.jsonl", f"webhook:{webhook}/hook", "python:tests.unit.test_notify:collect"
    )
    outcomes = notify(s, "task_failed", task_id="validate_raw", error="QualityCheckFailed: raw")
    assert list(outcomes.values()) == ["sent", "sent", "sent"]
    (line,) = (tmp_path / "alerts" / "alerts.jsonl").read_text().splitlines()  # relative to the warehouse
    event = json.loads(line)
    assert (event["event"], event["task_id"], event["source"]) == ("task_failed", "validate_raw", "tmall_brand")
    assert _Hook.bodies == [{"type": "application/json", "event": event}]
    assert [event] == RECEIVED
    notify(s, "run_stopped", days=["2014-08-15"], why="stopped by SIGTERM")
    assert len((tmp_path / "alerts" / "alerts.jsonl").read_text().splitlines()) == 2  # appended


def test_a_notifier_that_fails_is_reported_and_the_others_still_get_the_event(tmp_path, webhook):
    closed = f"http://127.0.0.1:{free_port()}/nobody"
    s = _settings(tmp_path, f"webhook:{webhook}/fail", f"webhook:{closed}", "python:no_such_module:f", "file:a.jsonl")
    outcomes = notify(s, "task_failed", task_id="ingest_events")
    assert outcomes[f"webhook:{webhook}/fail"].startswith("failed: HTTPError: HTTP Error 500")
    assert outcomes[f"webhook:{closed}"].startswith("failed: URLError")
    assert outcomes["python:no_such_module:f"].startswith("failed: ModuleNotFoundError")
    assert outcomes["file:a.jsonl"] == "sent" and (tmp_path / "a.jsonl").is_file()


def test_notifiers_are_checked_when_the_settings_load():
    assert load_settings("local", env={}).alerts == AlertSettings()  # a file in the warehouse by default
    for bad in ("email:ops@example.com", "webhook:ftp://x", "file:"):
        with pytest.raises(ConfigError, match=r"alerts\.notifiers"):
            load_settings("local", env={"NIGHTREC_SET": f"alerts.notifiers={bad}"})


def test_airflows_failure_callback_records_the_failure_and_notifies(tmp_path, monkeypatch):
    """The DAGs' on_failure_callback, called with the context keys Airflow passes it."""
    from nightrec_app.orchestration import record_failure
    from nightrec_app.tasks import begin_attempt

    s = _settings(tmp_path, "file:alerts.jsonl")
    monkeypatch.setenv("NIGHTREC_WAREHOUSE_ROOT", str(tmp_path))
    # what the task's environment carries (Settings.environment)
    monkeypatch.setenv("NIGHTREC_SET", "alerts.notifiers=file:alerts.jsonl")
    wh = Warehouse(tmp_path, "tmall_brand")
    begin_attempt(wh, [date(2014, 8, 15)], "nightly", "run_1")
    context = {
        "dag_run": SimpleNamespace(dag_id="nightly", run_id="run_1"),
        "params": {},
        "data_interval_start": SimpleNamespace(date=lambda: date(2014, 8, 15)),
        "ti": SimpleNamespace(task_id="validate_raw"),
        "exception": QualityCheckFailed("Data quality check 'raw' failed"),
    }
    record_failure(context)
    manifest = json.loads(wh.run_manifest(date(2014, 8, 15)).read_text())
    assert manifest["attempt"]["failed_task"] == "validate_raw"
    (event,) = [json.loads(line) for line in (s.warehouse_root / "alerts.jsonl").read_text().splitlines()]
    assert event["task_id"] == "validate_raw" and event["run_id"] == "run_1" and event["day"] == "2014-08-15"
    assert event["error"] == "QualityCheckFailed: Data quality check 'raw' failed"


def test_complete_through_moves_forward_only(tmp_path):
    wh = Warehouse(tmp_path, "tmall_brand")
    assert complete_through(wh, "topk") is None
    mark_complete(wh, "topk", date(2014, 8, 15), version="ds=2014-08-15/model=ranker-2014-08-15")
    marker = mark_complete(wh, "topk", date(2014, 8, 13))  # a backfill of an older day republishes it...
    assert marker["through"] == "2014-08-15" and marker["run_day"] == "2014-08-13"  # ...and keeps the later day
    assert complete_through(wh, "topk") == date(2014, 8, 15) and complete_through(wh, "marts") is None
    with pytest.raises(ValueError, match="unknown output"):
        mark_complete(wh, "lists", date(2014, 8, 15))
