"""Scratch warehouses for the benchmarks: one per up-scaling factor, with its history file."""

from __future__ import annotations

import shutil
from pathlib import Path

from nightrec.adapters import SourceAdapter
from nightrec.config import Settings
from nightrec.upscale import upscale


def scratch_warehouse(adapter: SourceAdapter, factor: int, workdir: Path, base: Settings) -> tuple[Settings, Path]:
    """A fresh directory ``workdir/x<factor>``: settings pointing at its warehouse, and the history to replay."""
    work = workdir / f"x{factor}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    bundled = adapter.bundled_events if factor == 1 else upscale(adapter, factor, work / adapter.bundled_events.name)
    return base.with_overrides(warehouse_root=work / "warehouse"), bundled
