"""The warehouse layout: where each zone and partition lives (docs/architecture.md, "Data zones")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

CHAMPION_FILE = "champion.json"


@dataclass(frozen=True)
class Warehouse:
    """Paths of one source's warehouse under ``root``."""

    root: Path
    source: str

    def raw(self) -> Path:
        return self.root / "raw" / self.source

    def raw_day(self, ds: date) -> Path:
        return self.raw() / f"ds={ds.isoformat()}"

    def raw_attributes(self) -> Path:
        return self.raw() / "_attributes"

    def bronze_events(self) -> Path:
        return self.root / "bronze" / "events"

    def bronze_quarantine(self) -> Path:
        return self.root / "bronze" / "quarantine"

    def bronze_item_attributes(self) -> Path:
        return self.root / "bronze" / "item_attributes"

    def bronze_user_attributes(self) -> Path:
        return self.root / "bronze" / "user_attributes"

    def bronze_attribute_quarantine(self) -> Path:
        return self.root / "bronze" / "attribute_quarantine"

    def silver_sequences(self) -> Path:
        return self.root / "silver" / "sequences"

    def runs(self) -> Path:
        return self.root / "_runs"

    def run_manifest(self, ds: date) -> Path:
        return self.runs() / f"ds={ds.isoformat()}" / "manifest.json"

    def marts(self, target: str) -> Path:
        """Each dbt target writes under its own root (docs/architecture.md, "dbt on two targets")."""
        return self.root / "marts" / target

    def mart_export(self, name: str) -> Path:
        """The Parquet export of a default-target mart (what Feast, training and the Spark jobs read)."""
        return self.root / "marts" / "parquet" / name

    def models(self) -> Path:
        return self.root / "models"

    def model_dir(self, kind: str, version: str) -> Path:
        """One trained version of a model (training/registry.py writes it)."""
        return self.models() / kind / version

    def champion_pointer(self, kind: str) -> Path:
        return self.models() / kind / CHAMPION_FILE

    def anchor_embeddings(self, kind: str, version: str, day: date) -> Path:
        """A model version's user and item embeddings as of anchor `day` (features through day - 1)."""
        return self.model_dir(kind, version) / "anchors" / f"ds={day.isoformat()}"

    def candidates(self, night: date) -> Path:
        """The candidates and features of every anchor of the night of data day `night` (anchor=<day>/)."""
        return self.root / "candidates" / f"ds={night.isoformat()}"

    def ensure_layout(self) -> None:
        """Create the directories engines expect to exist (DuckDB will not create its file's parent)."""
        for path in (self.raw(), self.marts("duckdb"), self.marts("spark"), self.root / "analytics"):
            path.mkdir(parents=True, exist_ok=True)


def partition(table_root: Path, ds: date) -> Path:
    return table_root / f"ds={ds.isoformat()}"


def champion(warehouse: Warehouse, kind: str) -> dict[str, Any] | None:
    """A model's champion pointer ({"version", "metrics", "gate"}), or None before its first publication. Torch-free:
    training, the Spark jobs and the report share it."""
    import json

    path = warehouse.champion_pointer(kind)
    return json.loads(path.read_text()) if path.is_file() else None
