""" "Complete through D" markers: one small JSON document per published output that a consumer can poll.

``_complete/<output>.json`` under the warehouse root, for ``marts`` (the exported marts and the analysts' database),
``features`` (the Feast online store), ``topk`` (the served lists) and ``segments`` (the segment tables and the
online segments). The task that publishes the output writes it after the publication succeeded:

    {"output": "topk", "through": "2014-08-15", "run_day": "2014-08-15", "published_at": "...", ...}

``through`` is the latest day the output holds complete; a run of an older day (a backfill, a corrected delivery)
republishes that day but never moves ``through`` back. A consumer that needs day D waits until ``through >= D``.
Consumers that are Airflow DAGs can be scheduled on the outputs' Assets instead (docs/architecture.md).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from nightrec.storage import read_json, update_json, utc_now_iso
from nightrec.warehouse import Warehouse

OUTPUTS = ("marts", "features", "topk", "segments")


def mark_complete(warehouse: Warehouse, output: str, day: date, **details: Any) -> dict[str, Any]:
    """Record that ``output`` was published for the run of ``day``; returns the marker now in force."""
    if output not in OUTPUTS:
        raise ValueError(f"unknown output {output!r}; one of {OUTPUTS}")

    def change(doc: dict[str, Any] | None) -> dict[str, Any]:
        through = max(day, date.fromisoformat(doc["through"])) if doc else day
        return {
            "output": output,
            "through": through.isoformat(),
            "run_day": day.isoformat(),
            "published_at": utc_now_iso(),
            **details,
        }

    return update_json(warehouse.completeness(output), change)


def complete_through(warehouse: Warehouse, output: str) -> date | None:
    """The latest day ``output`` holds complete, or None before its first publication."""
    path = warehouse.completeness(output)
    return date.fromisoformat(read_json(path)["through"]) if path.is_file() else None
