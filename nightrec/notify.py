"""Telling people a run went wrong: each event (a task that failed for good, a run that was stopped) goes to every
notifier of ``alerts.notifiers`` (:class:`nightrec.config.AlertSettings`): a JSON-lines file, a webhook, or a
function of the user's.

A notifier that fails (a webhook that is down, a full disk) is logged and reported back; it never raises into the
caller, which is an Airflow failure callback or a CLI command already reporting a failure: the failure it was about
must stay the one people see.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nightrec.config import Settings
from nightrec.storage import utc_now_iso

log = logging.getLogger(__name__)

Notifier = Callable[[dict[str, Any]], None]


def file_notifier(path: Path) -> Notifier:
    """Append each event as one JSON line (one ``write`` of an ``O_APPEND`` file: lines of concurrent writers do not
    interleave)."""

    def send(event: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(event, sort_keys=True, default=str) + "\n").encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    return send


def webhook_notifier(url: str, timeout: float) -> Notifier:
    """POST each event as JSON to ``url``; a status outside 2xx counts as a failed notification."""

    def send(event: dict[str, Any]) -> None:
        body = json.dumps(event, sort_keys=True, default=str).encode()
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json", "User-Agent": "nightrec"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if not 200 <= response.status < 300:
                raise OSError(f"webhook answered HTTP {response.status}")

    return send


def python_notifier(target: str) -> Notifier:
    """``module:function``, imported when the first event is sent."""
    module, _, name = target.partition(":")

    def send(event: dict[str, Any]) -> None:
        function = getattr(importlib.import_module(module), name)
        function(event)

    return send


def notifiers(settings: Settings) -> list[tuple[str, Notifier]]:
    """The configured notifiers, each with the text that names it."""
    out: list[tuple[str, Notifier]] = []
    for spec in settings.alerts.notifiers:
        scheme, _, target = spec.partition(":")
        if scheme == "file":
            path = Path(target) if Path(target).is_absolute() else settings.warehouse_root / target
            out.append((spec, file_notifier(path)))
        elif scheme == "webhook":
            out.append((spec, webhook_notifier(target, settings.alerts.webhook_timeout_seconds)))
        else:  # python (the settings' validation allows no other scheme)
            out.append((spec, python_notifier(target)))
    return out


def notify(settings: Settings, kind: str, **details: Any) -> dict[str, str]:
    """Send the event ``kind`` (``task_failed``, ``run_stopped``) with ``details`` to every notifier.

    :returns: each notifier's outcome, ``sent`` or ``failed: <why>`` (also logged as an error).
    """
    event = {"event": kind, "source": settings.source, "warehouse": str(settings.warehouse_root), "at": utc_now_iso()}
    event.update(details)
    outcomes: dict[str, str] = {}
    for name, send in notifiers(settings):
        try:
            send(event)
            outcomes[name] = "sent"
        except Exception as exc:  # a notifier must never hide the failure it reports
            outcomes[name] = f"failed: {type(exc).__name__}: {exc}"
            log.error(f"notifier {name} could not send {kind}: {type(exc).__name__}: {exc}")
    return outcomes
