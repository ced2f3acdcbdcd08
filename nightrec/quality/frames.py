"""The pandas frames the quality checks validate: raw deliveries, bronze partitions, marts of a run."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from nightrec.adapters import SourceAdapter
from nightrec.deliveries import inventory
from nightrec.timeformats import parse_times
from nightrec.warehouse import Warehouse, partition

# Columns the raw frame adds to the delivered ones (prefixed so they never clash with a source column).
RAW_LOCATION = ["_ds", "_file", "_line"]


def raw_frame(adapter: SourceAdapter, warehouse: Warehouse, days: list[date]) -> pd.DataFrame:
    """Every raw row the ingest job will read for ``days``, as delivered (strings; blank -> null).

    Added columns: ``_ds`` (delivery day), ``_file``, ``_line`` (1 = the header, where the file has one),
    ``_n_fields`` (fields in the record), ``_missing_columns`` (mapped columns its file's header lacks; null when
    complete),
    ``_header_fields`` (fields in its file's header; they differ for a malformed row), ``_valid_utf8`` (whether the
    line's bytes are UTF-8 text; ingest quarantines the others as invalid_encoding), ``_event_time``
    (parsed, UTC; null when unparseable) and ``_days_off`` (event day minus delivery day; 0 inside the interval).
    Byte-identical re-deliveries are left out: ingest counts their rows without reading them.
    """
    frames = []
    for f in inventory(adapter, warehouse, days, check_header=False):
        if not f.ingested:
            continue
        frame = _read_delivery(adapter, f.path)
        missing = [c for c in adapter.source_columns if c not in f.header]
        frame.insert(0, "_missing_columns", ", ".join(missing) if missing else None)
        first = adapter.first_data_line
        frame.insert(0, "_line", np.arange(first, len(frame) + first, dtype="int64"))
        frame.insert(0, "_file", f.path.name)
        frame.insert(0, "_ds", f.ds.isoformat())
        frames.append(frame)
    columns = [*RAW_LOCATION, "_missing_columns", "_valid_utf8", "_header_fields", "_n_fields", *adapter.source_columns]
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    time_col = adapter.columns["event_time"]
    if time_col in out.columns:
        times = parse_times(out[time_col], adapter.time)
        event_day = times.dt.tz_convert("UTC").dt.tz_localize(None).dt.normalize()
        delivery_day = pd.to_datetime(out["_ds"], format="%Y-%m-%d")
        out["_event_time"] = times
        out["_days_off"] = (event_day - delivery_day).dt.days.astype("float64")  # NaN where unparseable
    return out


def _read_delivery(adapter: SourceAdapter, path: Path) -> pd.DataFrame:
    if adapter.file_format == "parquet":
        frame = pd.read_parquet(path).astype("string").astype(object)
        frame.insert(0, "_n_fields", len(frame.columns))
        frame.insert(0, "_header_fields", len(frame.columns) - 1)
        frame.insert(0, "_valid_utf8", True)  # Parquet strings are UTF-8 by the format
        return frame.where(frame.notna(), None)
    # One record per physical line, as ingest reads them (a final newline does not start a row).
    raw_lines = path.read_bytes().split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines = raw_lines[:-1]
    lines = [line.decode("utf-8", errors="replace") for line in raw_lines]
    skip = adapter.first_data_line - 1  # the header line, if the source writes one
    valid = np.array([_is_utf8(line) for line in raw_lines[skip:]], dtype=bool)
    records = [next(csv.reader([line.rstrip("\r")], delimiter=adapter.delimiter), []) for line in lines]
    if adapter.header:
        header, body = (records[0], records[1:]) if records else ([], [])
    else:
        header, body = list(adapter.fields), records
    width = len(header)
    rows = [(r + [None] * width)[:width] for r in body]
    frame = pd.DataFrame(rows, columns=header, dtype=object)
    for col in header:  # ids and times are trimmed by ingest: whitespace only counts as missing
        stripped = frame[col].str.strip()
        frame[col] = stripped.where(stripped != "", None)
    frame.insert(0, "_n_fields", np.array([len(r) for r in body], dtype="int64"))
    frame.insert(0, "_header_fields", width)
    frame.insert(0, "_valid_utf8", valid)
    return frame


def _is_utf8(line: bytes) -> bool:
    """UTF-8 text without U+FFFD, the mark of bytes an earlier decoder could not read (as ingest judges a line)."""
    try:
        return "\ufffd" not in line.decode("utf-8")
    except UnicodeDecodeError:
        return False


def read_partitions(table_root: Path, days: list[date], columns: list[str] | None = None) -> pd.DataFrame:
    """The ds partitions of a warehouse Parquet table (ds restored from the directory name)."""
    import pyarrow.parquet as pq

    frames = []
    for ds in days:
        for f in sorted(partition(table_root, ds).glob("*.parquet")):
            frame = pq.read_table(f, columns=columns).to_pandas()
            frame["ds"] = ds.isoformat()
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*(columns or []), "ds"])
