"""The run manifest of one day: counts per zone, quarantine reasons, timings.

See docs/architecture.md, "A run manifest per day".

Each job merges its own section into ``_runs/ds=D/manifest.json``; ``run_report`` lays it out (`nightrec report`).

Besides the sections, a manifest holds the day's latest *attempt* (which Airflow run last worked on the day, whether
it is running, succeeded or failed, and in which task with which error) and, per section, the run that wrote it. So
after a failed run `status` and `report` show the failure, and say which sections an earlier run left behind.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from nightrec.storage import read_json, update_json, utc_now_iso
from nightrec.warehouse import Warehouse


def _update(warehouse: Warehouse, ds: date, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Apply ``change`` (in place) to the day's manifest, a new one if there is none, under its lock: several tasks
    of a run update the same day's manifest, at the same time under a scheduler that runs tasks in parallel."""

    def apply(doc: dict[str, Any] | None) -> dict[str, Any]:
        doc = doc or {"source": warehouse.source, "ds": ds.isoformat(), "stages": {}}
        change(doc)
        return doc

    return update_json(warehouse.run_manifest(ds), apply)


def update_run_manifest(warehouse: Warehouse, ds: date, section: str, content: dict[str, Any]) -> Path:
    """Replace ``section`` of the day's run manifest (a rerun overwrites its own section only) and note which run
    wrote it (the day's current attempt; None outside an Airflow run, e.g. a job started by hand)."""

    def change(doc: dict[str, Any]) -> None:
        doc["stages"][section] = content
        doc.setdefault("written_by", {})[section] = (doc.get("attempt") or {}).get("run_id")

    _update(warehouse, ds, change)
    return warehouse.run_manifest(ds)


def begin_attempt(warehouse: Warehouse, days: list[date], dag_id: str, run_id: str) -> None:
    """Record that the Airflow run ``run_id`` is now working on each of ``days`` (its first task calls this).

    The last of ``days`` is the run's own day (a nightly run reprocesses the days before it as lookback): its manifest
    also keeps the run as ``own_run``, which later runs that merely look back over the day leave alone. That is what
    ``nightrec backfill --resume`` reads to tell a finished night from one still to do.
    """
    started = {"dag_id": dag_id, "run_id": run_id, "state": "running", "started_at": utc_now_iso()}
    for ds in days:

        def change(doc: dict[str, Any], own: bool = ds == days[-1]) -> None:
            doc["attempt"] = dict(started)
            if own:
                doc["own_run"] = dict(started)

        _update(warehouse, ds, change)


def end_attempt(
    warehouse: Warehouse,
    run_id: str,
    state: str,
    days: list[date] | None = None,
    task: str | None = None,
    error: str | None = None,
) -> list[date]:
    """Close the attempt of run ``run_id`` as ``success``, ``failed`` (with the failed task and its error) or
    ``stopped`` (terminated from outside, with why).

    :param days: the days to close; by default every day whose current attempt is this run. A run that failed
        before its first task recorded the attempt passes its own day, which then gets a failed attempt.
    :returns: the days closed.
    """
    if days is None:
        days = [ds for ds in manifest_days(warehouse) if (latest_attempt(warehouse, ds) or {}).get("run_id") == run_id]

    def change(doc: dict[str, Any]) -> None:
        attempt = doc.get("attempt") if (doc.get("attempt") or {}).get("run_id") == run_id else None
        attempt = attempt or {"run_id": run_id, "started_at": None}
        earlier = {k: attempt.pop(k) for k in ("state", "failed_task", "error") if k in attempt}
        attempt.update(state=state, ended_at=utc_now_iso())
        if state != "success":
            attempt.update(failed_task=task, error=(error or "")[:2000])  # the head names the failure
        elif "error" in earlier:
            # the run failed or was stopped, then its tasks were cleared and it ended well: a success with no error
            # fields, the failure it recovered from kept beside it rather than dropped
            attempt["recovered_from"] = earlier
        doc["attempt"] = attempt
        if (doc.get("own_run") or {}).get("run_id") == run_id:
            doc["own_run"] = {**doc["own_run"], "state": state, "ended_at": attempt["ended_at"]}

    for ds in days:
        _update(warehouse, ds, change)
    return days


def stop_attempts(warehouse: Warehouse, days: list[date], why: str, since: str, signalled: bool) -> list[date]:
    """Close as ``stopped`` what a run that ended without success left on ``days``: attempts still marked running
    (it was terminated, or died, before a task recorded the outcome) and, when it was stopped by a signal, the
    failure its interrupted task recorded on the way down (that task did not fail on its own).

    :param since: when the command started the run (ISO, UTC): attempts started earlier are another run's.
    :returns: the days closed.
    """
    stopped = []
    for ds in days:
        attempt = latest_attempt(warehouse, ds)
        if attempt is None or (attempt.get("started_at") or "") < since:
            continue
        state = attempt.get("state")
        if state == "running" or (signalled and state == "failed"):
            end_attempt(warehouse, attempt["run_id"], "stopped", [ds], task=attempt.get("failed_task"), error=why)
            stopped.append(ds)
    return stopped


def latest_attempt(warehouse: Warehouse, ds: date) -> dict[str, Any] | None:
    doc = read_run_manifest(warehouse, ds)
    return None if doc is None else doc.get("attempt")


def own_run(warehouse: Warehouse, ds: date) -> dict[str, Any] | None:
    """The latest run whose own day is ``ds`` (not one that only looked back over it), with its state."""
    doc = read_run_manifest(warehouse, ds)
    return None if doc is None else doc.get("own_run")


def stale_sections(doc: dict[str, Any]) -> dict[str, str | None]:
    """Sections of a manifest written by another run than its latest attempt: section -> the run that wrote it.

    Empty when the manifest has no attempt (a warehouse built before attempts were recorded, or jobs run by hand).
    """
    attempt = (doc.get("attempt") or {}).get("run_id")
    if attempt is None:
        return {}
    writers = doc.get("written_by", {})
    return {s: writers.get(s) for s in doc.get("stages", {}) if writers.get(s) != attempt}


def read_run_manifest(warehouse: Warehouse, ds: date) -> dict[str, Any] | None:
    path = warehouse.run_manifest(ds)
    return read_json(path) if path.is_file() else None


def manifest_days(warehouse: Warehouse) -> list[date]:
    """Every day with a run manifest, in order."""
    return sorted(
        date.fromisoformat(p.parent.name.removeprefix("ds="))
        for p in warehouse.runs().glob("ds=*/manifest.json")
        if p.parent.name.startswith("ds=")
    )


def accounted_rows(ingest: dict[str, Any]) -> int:
    """The raw rows an ingest section accounts for: bronze + quarantined + re-delivered + forgotten on request
    (docs/architecture.md, "Event contract": every raw row is accounted for)."""
    kept = ingest["bronze_rows"] + ingest["quarantined_rows"] + ingest["redelivered_rows"]
    return kept + ingest.get("forgotten_rows", 0)


def reconciles(ingest: dict[str, Any]) -> bool:
    return accounted_rows(ingest) == ingest["raw_rows"]
