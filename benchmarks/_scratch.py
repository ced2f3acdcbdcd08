"""Scratch warehouses for the benchmarks: one per up-scaling factor, with its history file; the flags of the
benchmarks that copy the users of an already built night."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from nightrec.adapters import SourceAdapter
from nightrec.config import PROJECT_ROOT, Settings, load_settings
from nightrec.upscale import upscale


def scratch_warehouse(adapter: SourceAdapter, factor: int, workdir: Path, base: Settings) -> tuple[Settings, Path]:
    """A fresh directory ``workdir/x<factor>``: settings pointing at its warehouse, and the history to replay."""
    work = workdir / f"x{factor}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    bundled = adapter.bundled_events if factor == 1 else upscale(adapter, factor, work / adapter.bundled_events.name)
    return base.with_overrides(warehouse_root=work / "warehouse"), bundled


def built_night_arguments(description: str, copied: str, profile_sets: str) -> tuple[argparse.Namespace, Settings]:
    """The flags of a benchmark over a built night whose ``copied`` (users, consumers) it copies k times: --warehouse,
    --factors, --profile (what it sets: ``profile_sets``), --workdir; and the settings of that warehouse."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warehouse", type=Path, default=PROJECT_ROOT / "warehouse", help="a built warehouse")
    parser.add_argument("--factors", default="1,10", help=f"copies of every one of the {copied} (comma-separated)")
    parser.add_argument("--profile", default="local", help=f"the settings profile ({profile_sets})")
    parser.add_argument("--workdir", type=Path, default=PROJECT_ROOT / ".bench", help="scratch directory")
    args = parser.parse_args()
    return args, load_settings(args.profile, env={}).with_overrides(warehouse_root=args.warehouse.resolve())
