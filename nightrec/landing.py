"""Landing: deliveries into ``raw/<source>/ds=D/``, exactly as delivered (less the rows of forgotten users).

Two ways in:

* :func:`replay` plays a bundled history file as if the shop delivered it one day at a time (one file per
  day; a day without events gets a header-only file, so "no events" is distinguishable from "no delivery").
* :func:`land_file` lands one file a user or an upstream system delivers for day D.

Rows of users forgotten on request (``nightrec forget``, nightrec/forget.py) are left out of whatever is landed,
and the day's ledger keeps the rows the file was delivered with, so ingest still accounts for every delivered row.

Rules (docs/architecture.md, "Landing and history"): landing the same bytes under the same name again changes nothing;
different bytes under an existing name are a corrected re-delivery and replace that file; the same bytes
under a new name are kept (raw is what was delivered) and reported as a re-delivery, and ingest counts those
rows as re-delivered instead of ingesting them twice.

A ledger per day (``raw/<source>/_landed/ds=D.json``) records who landed each file: the replayer or a delivery.
The replayer never replaces a file it did not write itself: a user's corrected delivery under the history file's
name is kept, and the replay says so (status ``kept``) instead of silently restoring the old rows.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from nightrec.adapters import SourceAdapter, days_between
from nightrec.errors import InputError
from nightrec.forget import Forgotten, filter_attribute_file, filter_event_file, filter_event_lines
from nightrec.run_report import outside_message
from nightrec.storage import (
    data_files,
    fresh_staging,
    read_json,
    sha256_file,
    swap_into_place,
    update_json,
    utc_now_iso,
)
from nightrec.timeformats import parse_times
from nightrec.warehouse import Warehouse


@dataclass
class DayLanding:
    ds: date
    file: str
    rows: int
    status: str  # landed | unchanged | replaced | redelivered | kept (a delivery the replayer did not replace)
    reason: str = ""
    forgotten: int = 0  # rows of users forgotten on request, left out (nightrec/forget.py)

    def describe(self) -> dict[str, object]:
        doc: dict[str, object] = {"file": self.file, "rows": self.rows, "status": self.status}
        doc |= {"forgotten_rows": self.forgotten} if self.forgotten else {}
        return doc | ({"reason": self.reason} if self.reason else {})


@dataclass
class LandingReport:
    """What a replay or landing did, day by day.

    :param outside: rows of the history file whose day lies outside the source's history [start, end]: day -> rows.
        No replay lands them (no day of the history is theirs); they are reported, never silently left out.
    """

    source: str
    days: list[DayLanding] = field(default_factory=list)
    outside: dict[str, int] = field(default_factory=dict)
    history: tuple[date, date] | None = None

    @property
    def rows(self) -> int:
        return sum(d.rows for d in self.days)

    def count(self, status: str) -> int:
        return sum(1 for d in self.days if d.status == status)

    def summary(self) -> str:
        statuses = ("landed", "replaced", "unchanged", "redelivered", "kept")
        parts = [f"{s}={self.count(s)}" for s in statuses if self.count(s)]
        line = f"{self.source}: {len(self.days)} day file(s), {self.rows:,} rows ({', '.join(parts) or 'none'})"
        if forgotten := sum(d.forgotten for d in self.days):
            line += f"; {forgotten:,} rows of users forgotten on request left out"
        kept = [d for d in self.days if d.status == "kept"]
        line += "".join(f"\n  ds={d.ds} {d.file}: kept, {d.reason}" for d in kept)
        return line + (f"\n  {self.outside_message()}" if self.outside else "")

    def outside_message(self) -> str:
        return outside_message(self.source, self.outside, self.history)

    def outside_for(self, ds: date) -> dict[str, int]:
        """The outside rows a day's manifest records: those before the history on its first day, after it on its
        last day (so each is recorded once, on the day a run of the history's edge lands)."""
        if self.history is None or ds not in self.history:
            return {}
        first = ds == self.history[0]
        return {d: n for d, n in self.outside.items() if (d < ds.isoformat()) == first}


def _ledger(warehouse: Warehouse, ds: date) -> dict[str, dict[str, str]]:
    path = warehouse.raw_ledger(ds)
    return read_json(path) if path.is_file() else {}


def _record(
    warehouse: Warehouse, ds: date, filename: str, digest: str, by: str, delivered_rows: int | None = None
) -> None:
    """Record who landed ``filename`` and its hash; ``delivered_rows`` when forgotten users' rows were left out of
    it (ingest counts the difference as forgotten)."""
    entry: dict[str, object] = {"sha256": digest, "by": by, "at": utc_now_iso()}
    if delivered_rows is not None:
        entry["delivered_rows"] = delivered_rows
    # locked: the nightly land task and a user's `nightrec land --file` may record files of one day at once
    update_json(warehouse.raw_ledger(ds), lambda ledger: {**(ledger or {}), filename: entry})


def _replayed_over(warehouse: Warehouse, ds: date, filename: str, digest: str) -> str | None:
    """Why the replayer must not write ``filename`` of day ``ds`` with content of hash ``digest`` (None when it may):
    the file there differs and is not the one the replayer itself wrote last."""
    target = warehouse.raw_day(ds) / filename
    if not target.is_file():
        return None
    there = sha256_file(target)
    entry = _ledger(warehouse, ds).get(filename)
    if there == digest or (entry is not None and entry["by"] == "replay" and entry["sha256"] == there):
        return None
    if entry is not None and entry["by"] == "delivery":
        return (
            f"the file there was delivered on {entry['at']} (`nightrec land --file`) and differs from the replayed "
            "history; the delivery is what gets ingested"
        )
    return "the file there was not written by the replayer (no ledger entry for its bytes); it is left as it is"


def _deliver(day_dir: Path, filename: str, content: bytes) -> str:
    """Put one delivered file into a day partition atomically; return what happened."""
    target = day_dir / filename
    digest = hashlib.sha256(content).hexdigest()
    if target.is_file() and target.stat().st_size == len(content) and sha256_file(target) == digest:
        return "unchanged"
    others = [f for f in data_files(day_dir) if f.name != filename]
    status = "replaced" if target.exists() else "landed"
    if status == "landed" and any(sha256_file(f) == digest for f in others):
        status = "redelivered"
    staging = fresh_staging(day_dir)
    staging.mkdir()
    for f in others:  # keep the day's other deliveries (hard links: no copy of the bytes)
        try:
            os.link(f, staging / f.name)
        except OSError:
            shutil.copy2(f, staging / f.name)
    (staging / filename).write_bytes(content)
    swap_into_place(staging, day_dir)
    return status


def count_data_rows(content: bytes, header: bool = True) -> int:
    """Rows of a delivered CSV: its lines minus the header, if it has one (a final newline does not start a row)."""
    if not content:
        return 0
    lines = content.count(b"\n") + (0 if content.endswith(b"\n") else 1)
    return max(lines - (1 if header else 0), 0)


def replay(
    adapter: SourceAdapter,
    warehouse: Warehouse,
    start: date,
    end: date,
    bundled: Path | None = None,
) -> LandingReport:
    """Deliver the bundled history's days in [start, end) into raw/, one file per day.

    :param bundled: the history file (defaults to the adapter's bundled file; the up-scaler passes its copy).
    :raises InputError: the file is missing or unreadable, or a row's time cannot be parsed (the replayer
        cannot know which day such a row belongs to; the message lists the line numbers).
    """
    path = bundled or adapter.bundled_events
    if path is None:
        raise InputError(
            f"Source '{adapter.name}' is a live feed (no 'bundled' history in conf/sources/{adapter.name}.yaml): "
            "there is nothing to replay; land each delivered file with `nightrec land --file F --ds D`"
        )
    if not path.is_file():
        raise InputError(f"Bundled history for source '{adapter.name}' not found at {path}")
    if adapter.file_format != "csv":
        raise InputError(f"The replayer reads CSV histories; source '{adapter.name}' declares {adapter.file_format}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text: {exc}") from exc
    lines = np.array(text.split("\n"), dtype=object)
    if len(lines) and lines[-1] == "":
        lines = lines[:-1]
    if len(lines) == 0 and adapter.header:
        raise InputError(f"{path} is empty (no header)")
    header, body = (str(lines[0]), lines[1:]) if adapter.header else (None, lines)
    time_col = adapter.columns["event_time"]
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=False,
            usecols=[time_col],
            sep=adapter.delimiter,
            **({} if adapter.header else {"header": None, "names": list(adapter.fields)}),
        )
    except (ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"Could not read column '{time_col}' of {path}: {exc}") from exc
    if len(frame) != len(body):
        raise InputError(
            f"{path}: {len(body)} lines but {len(frame)} CSV records; the replayer needs one record per line"
        )
    times = parse_times(frame[time_col], adapter.time)
    bad = np.flatnonzero(times.isna().to_numpy())
    if len(bad):
        sample = ", ".join(f"line {i + adapter.first_data_line}: {frame[time_col].iloc[i]!r}" for i in bad[:5])
        raise InputError(f"{path}: {len(bad)} row(s) with an unparseable '{time_col}' ({sample})")
    days = times.dt.strftime("%Y-%m-%d").to_numpy()
    order = np.argsort(days, kind="stable")  # stable: keep the file's line order inside a day
    sorted_days = days[order]
    wanted = days_between(start, end)
    first, last = adapter.history_start.isoformat(), adapter.history_end.isoformat()
    outside = (days < first) | (days > last)
    report = LandingReport(adapter.name, history=(adapter.history_start, adapter.history_end))
    report.outside = {str(d): int(n) for d, n in zip(*np.unique(days[outside], return_counts=True), strict=True)}
    filename = path.name
    forgotten = Forgotten.of(warehouse)
    names = adapter.header_of(next(csv.reader([header], delimiter=adapter.delimiter), []) if header else [])
    for ds in wanted:
        key = ds.isoformat()
        lo, hi = np.searchsorted(sorted_days, key, "left"), np.searchsorted(sorted_days, key, "right")
        rows = filter_event_lines(list(body[order[lo:hi]]), names, adapter, forgotten)
        content = ("" if header is None else header + "\n").encode("utf-8") + "".join(
            f"{r}\n" for r in rows.content
        ).encode()
        digest = hashlib.sha256(content).hexdigest()
        refused = _replayed_over(warehouse, ds, filename, digest)
        if refused is not None:
            rows_there = count_data_rows((warehouse.raw_day(ds) / filename).read_bytes(), adapter.header)
            report.days.append(DayLanding(ds, filename, rows_there, "kept", refused))
            continue
        status = _deliver(warehouse.raw_day(ds), filename, content)
        if status != "unchanged" or filename not in _ledger(warehouse, ds):
            _record(warehouse, ds, filename, digest, "replay", int(hi - lo) if rows.removed else None)
        report.days.append(DayLanding(ds, filename, int(hi - lo) - rows.removed, status, forgotten=rows.removed))
    _land_attributes(adapter, warehouse)
    return report


def _land_attributes(adapter: SourceAdapter, warehouse: Warehouse) -> None:
    for attr in (adapter.item_attributes, adapter.user_attributes):
        if attr is None:
            continue
        if not attr.path.is_file():
            raise InputError(f"Attribute file of source '{adapter.name}' not found at {attr.path}")
        content = attr.path.read_bytes()
        if attr is adapter.user_attributes:  # a forgotten user's attributes are not landed again
            content = filter_attribute_file(content, attr.key, Forgotten.of(warehouse)).content
        _deliver(warehouse.raw_attributes(), attr.path.name, content)


def land_file(adapter: SourceAdapter, warehouse: Warehouse, ds: date, file: Path) -> DayLanding:
    """Land one delivered file for day ``ds`` (name kept) and say whether it is new, a correction or a repeat."""
    if not file.is_file():
        raise InputError(f"Delivery {file} does not exist or is not a file")
    if not adapter.matches(file.name):
        raise InputError(f"{file.name} does not match source '{adapter.name}' file pattern {adapter.file_pattern!r}")
    delivered = file.read_bytes()
    content, forgotten, _ = filter_event_file(delivered, adapter, Forgotten.of(warehouse))
    status = _deliver(warehouse.raw_day(ds), file.name, content)
    if adapter.file_format == "csv":
        rows = count_data_rows(content, adapter.header)
    else:  # counted by ingest (an unreadable file is its to report), unless rows were left out here
        rows = pq.ParquetFile(io.BytesIO(content)).metadata.num_rows if forgotten else -1
    digest = hashlib.sha256(content).hexdigest()
    _record(warehouse, ds, file.name, digest, "delivery", rows + forgotten if forgotten else None)
    return DayLanding(ds, file.name, rows, status, forgotten=forgotten)
