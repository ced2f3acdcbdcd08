"""The run manifest of one day: counts per zone, quarantine reasons, timings.

See docs/architecture.md, "A run manifest per day".

Each job merges its own section into ``_runs/ds=D/manifest.json``; ``run_report`` lays it out (`nightrec report`).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from nightrec.storage import read_json, write_json_atomic
from nightrec.warehouse import Warehouse


def update_run_manifest(warehouse: Warehouse, ds: date, section: str, content: dict[str, Any]) -> Path:
    """Replace ``section`` of the day's run manifest (a rerun overwrites its own section only)."""
    path = warehouse.run_manifest(ds)
    doc = read_json(path) if path.is_file() else {"source": warehouse.source, "ds": ds.isoformat(), "stages": {}}
    doc["stages"][section] = content
    write_json_atomic(path, doc)
    return path


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
    """The raw rows an ingest section accounts for: bronze + quarantined + re-delivered (docs/architecture.md, "Event
    contract": every raw row is accounted for)."""
    return ingest["bronze_rows"] + ingest["quarantined_rows"] + ingest["redelivered_rows"]


def reconciles(ingest: dict[str, Any]) -> bool:
    return accounted_rows(ingest) == ingest["raw_rows"]
