"""The up-scaler: a bigger copy of a real history for benchmarks, keeping real behaviour.

Copy k of every user (k = 0 .. factor-1) gets a new id and the same rows (same items, behaviours and days),
so per-user behaviour, item popularity shape and the day distribution stay those of the real data while rows
and users grow by ``factor``. Copy 0 keeps the original ids.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from nightrec.adapters import SourceAdapter
from nightrec.errors import InputError


def copy_suffix(copy: int) -> str:
    """What copy ``copy`` appends to every user id: nothing for copy 0, else 'x<copy>'. The benchmarks that copy
    users inside built tables (benchmarks/feast_materialize.py, benchmarks/ranker_scaling.py) append the same."""
    return "" if copy == 0 else f"x{copy}"


def new_user_id(original: str, copy: int) -> str:
    """The id of copy ``copy`` of a user: the original for copy 0, else '<original>x<copy>'."""
    return original + copy_suffix(copy)


def upscale(adapter: SourceAdapter, factor: int, output: Path, source_file: Path | None = None) -> Path:
    """Write ``factor`` copies of the bundled history's rows to ``output`` (CSV, same header)."""
    if factor < 1:
        raise InputError(f"--factor must be >= 1, got {factor}")
    src = source_file or adapter.bundled_events
    if src is None:
        raise InputError(f"Source '{adapter.name}' is a live feed: it has no bundled history to up-scale")
    if not src.is_file():
        raise InputError(f"History to up-scale not found at {src}")
    text = src.read_text(encoding="utf-8")
    reader = csv.reader(io.StringIO(text), delimiter=adapter.delimiter)
    header = next(reader)
    try:
        user_idx = header.index(adapter.columns["user_id"])
    except ValueError as exc:
        raise InputError(f"{src}: no user column {adapter.columns['user_id']!r} in header {header}") from exc
    rows = list(reader)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter=adapter.delimiter, lineterminator="\n")
        w.writerow(header)
        for k in range(factor):
            for row in rows:
                out = list(row)
                out[user_idx] = new_user_id(row[user_idx], k)
                w.writerow(out)
    tmp.replace(output)
    return output
