"""The delivered files of a day range: which are ingested, which are byte-identical re-deliveries.

Shared by the ingest job and the raw-landing quality checks, so both look at exactly the same files.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from nightrec.adapters import SourceAdapter
from nightrec.errors import InputError
from nightrec.landing import count_data_rows
from nightrec.storage import data_files, read_json, sha256_file
from nightrec.warehouse import Warehouse


@dataclass(frozen=True)
class DeliveredFile:
    ds: date
    path: Path
    sha256: str
    rows: int
    header: tuple[str, ...]
    redelivery_of: str | None  # name of the earlier file with the same bytes, if any
    empty: bool = False  # 0 bytes: not even a header; a delivery of no rows that ingest does not read
    forgotten: int = 0  # rows delivered in it that `nightrec forget` took out since (nightrec/forget.py)

    @property
    def delivered_rows(self) -> int:
        """The rows the file was delivered with: those in it now and those of forgotten users taken out."""
        return self.rows + self.forgotten

    @property
    def ingested(self) -> bool:
        """Whether ingest reads the file (a re-delivery's rows are counted, an empty file has none)."""
        return self.redelivery_of is None and not self.empty

    def describe(self) -> dict[str, Any]:
        status = (
            f"redelivered (same bytes as {self.redelivery_of})"
            if self.redelivery_of
            else "empty (0 bytes, no header): no rows to ingest"
            if self.empty
            else "ingested"
        )
        doc = {"name": self.path.name, "sha256": self.sha256, "rows": self.rows, "status": status}
        return doc | ({"forgotten_rows": self.forgotten} if self.forgotten else {})


def inventory(
    adapter: SourceAdapter, warehouse: Warehouse, days: list[date], check_header: bool = True
) -> list[DeliveredFile]:
    """List and check every delivered file of the days; fail loudly on a missing or unreadable delivery.

    :param check_header: fail when a file lacks a column the adapter maps (the quality check turns that off
        and reports it as a failed schema expectation instead).
    """
    found: list[DeliveredFile] = []
    for ds in days:
        day_dir = warehouse.raw_day(ds)
        files = [f for f in data_files(day_dir) if adapter.matches(f.name)]
        if not files:
            raise InputError(
                f"No delivery for source '{adapter.name}' day {ds}: expected files matching "
                f"{adapter.file_pattern!r} in {day_dir}. Land it first: `nightrec land --file <file> --ds {ds}`"
                + ("" if adapter.is_feed else f", or replay the bundled history, `nightrec land --start {ds}`")
                + "."
            )
        seen: dict[str, str] = {}
        ledger = read_json(warehouse.raw_ledger(ds)) if warehouse.raw_ledger(ds).is_file() else {}
        for f in files:
            try:
                digest = sha256_file(f)
                if f.stat().st_size == 0:  # a 0-byte delivery holds no rows: recorded, not a reason to stop the day
                    found.append(DeliveredFile(ds, f, digest, 0, (), None, empty=True))
                    continue
                header, rows = _describe_file(adapter, f)
            except OSError as exc:
                raise InputError(f"Cannot read delivered file {f}: {exc}") from exc
            missing = [c for c in adapter.source_columns if c not in header]
            if missing and check_header:
                raise InputError(
                    f"{f}: header {list(header)} lacks column(s) {missing} that source '{adapter.name}' maps "
                    f"({adapter.columns}); is this the right source?"
                )
            forgotten = _forgotten_rows(ledger.get(f.name), digest, rows)
            found.append(DeliveredFile(ds, f, digest, rows, header, seen.get(digest), forgotten=forgotten))
            seen.setdefault(digest, f.name)
    return found


def _forgotten_rows(entry: dict[str, Any] | None, digest: str, rows: int) -> int:
    """Rows of forgotten users taken out of a file: its ledger's ``delivered_rows`` less the rows in it now, when the
    ledger describes these bytes (a later delivery under the name starts afresh)."""
    if not entry or "delivered_rows" not in entry or entry.get("sha256") != digest:
        return 0
    return max(int(entry["delivered_rows"]) - rows, 0)


def file_rows(adapter: SourceAdapter, path: Path) -> int:
    """The data rows of one delivered file (0 for a 0-byte file)."""
    return _describe_file(adapter, path)[1] if path.stat().st_size else 0


def _describe_file(adapter: SourceAdapter, path: Path) -> tuple[tuple[str, ...], int]:
    if adapter.file_format == "parquet":
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(path)
        return tuple(meta.schema_arrow.names), meta.metadata.num_rows
    content = path.read_bytes()
    first = content.split(b"\n", 1)[0].decode("utf-8", errors="replace").rstrip("\r")
    header = adapter.header_of(next(csv.reader(io.StringIO(first), delimiter=adapter.delimiter), []))
    return header, count_data_rows(content, adapter.header)
