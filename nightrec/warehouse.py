"""The warehouse layout: where each zone and partition lives (docs/architecture.md, "Data zones")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nightrec.config import Settings

CHAMPION_FILE = "champion.json"


@dataclass(frozen=True)
class Warehouse:
    """Every path of one source's warehouse under ``root``: no other module builds one by hand.

    ``source`` names the raw zone's folder; the other zones hold one source per root.
    """

    root: Path
    source: str

    @classmethod
    def of(cls, settings: Settings) -> Warehouse:
        """The configured warehouse (the profile's root and source)."""
        return cls(settings.warehouse_root, settings.source)

    def raw(self) -> Path:
        return self.root / "raw" / self.source

    def raw_day(self, ds: date) -> Path:
        return self.raw() / f"ds={ds.isoformat()}"

    def raw_attributes(self) -> Path:
        return self.raw() / "_attributes"

    def raw_ledger(self, ds: date) -> Path:
        """Who landed each file of day ``ds`` (the replayer or a user's delivery), so a replay never replaces the
        latter."""
        return self.raw() / "_landed" / f"ds={ds.isoformat()}.json"

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

    def forgotten_users(self) -> Path:
        """The users forgotten on request, by key (nightrec/forget.py): later deliveries of them are not landed."""
        return self.root / "_privacy" / "forgotten.json"

    def completeness(self, output: str) -> Path:
        """The "complete through D" marker of a published output (nightrec/completeness.py)."""
        return self.root / "_complete" / f"{output}.json"

    def marts(self, target: str) -> Path:
        """Each dbt target writes under its own root (docs/architecture.md, "dbt on two targets")."""
        return self.root / "marts" / target

    def dbt_artifacts(self, target: str) -> Path:
        """dbt's target path (manifest, run results, the docs it generates) and logs for this warehouse: two
        warehouses built at once on one machine never write each other's artifacts."""
        return self.root / "marts" / "_dbt" / target

    def mart_exports(self) -> Path:
        """The Parquet exports of the default target's marts (what Feast, training and the Spark jobs read)."""
        return self.root / "marts" / "parquet"

    def mart_export(self, name: str) -> Path:
        return self.mart_exports() / name

    def duckdb_target_db(self) -> Path:
        """The database file dbt's default (duckdb) target builds the marts in."""
        return self.marts("duckdb") / "nightrec.duckdb"

    def analyst_db(self) -> Path:
        """The analysts' DuckDB file of views over the exports (swapped in whole by publish_marts)."""
        return self.root / "analytics" / "nightrec.duckdb"

    def serving_topk(self) -> Path:
        """The scored top-k versions (ds=D/model=V/) and the `current` pointer services read."""
        return self.root / "serving" / "topk"

    def serving_user_topk(self) -> Path:
        """The published lists as the Feast view `user_topk` reads them (one partition per published day)."""
        return self.root / "serving" / "user_topk"

    def feast(self) -> Path:
        """Feast's file registry and SQLite online store (the local variant)."""
        return self.root / "feast"

    def dbt_docs(self) -> Path:
        """dbt's generated documentation site."""
        return self.root / "docs" / "dbt"

    def data_docs(self) -> Path:
        """Great Expectations' Data Docs."""
        return self.root / "docs" / "gx"

    def run_pages(self) -> Path:
        """The HTML run report: a page per day and an index."""
        return self.root / "docs" / "runs"

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

    def consumer_embeddings(self, night: date) -> Path:
        """The consumer encoder's embedding of every consumer as of night D (training/consumer_embeddings.py)."""
        return self.model_dir("consumer_encoder", night.isoformat()) / "user_embeddings.parquet"

    def segments(self, table: str) -> Path:
        """A table of the segments zone, partitioned by night: ``membership``, ``profiles`` and ``centroids``
        (spark_jobs/build_segments.py) and ``audiences`` (the saved lookalike audiences, nightrec/audiences.py)."""
        return self.root / "segments" / table

    def candidates(self, night: date) -> Path:
        """The candidates and features of every anchor of the night of data day `night` (anchor=<day>/)."""
        return self.root / "candidates" / f"ds={night.isoformat()}"

    def ensure_layout(self) -> None:
        """Create the directories engines expect to exist (DuckDB will not create its file's parent)."""
        for path in (self.raw(), self.marts("duckdb"), self.marts("spark"), self.root / "analytics"):
            path.mkdir(parents=True, exist_ok=True)


def partition(table_root: Path, ds: date) -> Path:
    return table_root / f"ds={ds.isoformat()}"


def complete_nights(root: Path, before: date | None = None, marker: str = "ds=*/_SUCCESS") -> list[date]:
    """The nights under ``root`` whose output is complete, oldest first; only those before ``before`` if given.

    ``marker`` is the glob of the file a night's writer puts last: a partitioned table's ``ds=D/_SUCCESS`` (the
    default) or a model version's ``D/<file>``. Staging folders (hidden, renamed into place when complete) never count.
    """
    nights = []
    for path in root.glob(marker):
        folder = path.parent.name
        if folder.startswith("."):
            continue
        night = date.fromisoformat(folder.removeprefix("ds="))
        if before is None or night < before:
            nights.append(night)
    return sorted(nights)


def champion(warehouse: Warehouse, kind: str) -> dict[str, Any] | None:
    """A model's champion pointer ({"version", "metrics", "gate"}), or None before its first publication. Torch-free:
    training, the Spark jobs and the report share it."""
    import json

    path = warehouse.champion_pointer(kind)
    return json.loads(path.read_text()) if path.is_file() else None
