"""Retention: the nightly outputs older than a horizon are removed, never what is served or what a later night reads.

Every night writes new versions of its outputs, and nothing removed them. With ``retention.days: N`` (0, the
default, keeps everything) night D's ``apply_retention`` task (and ``nightrec retention``) removes the versions of
days before D - N + 1 of:

    candidates/ds=E/                      the night's candidates (a night rebuilds its own)
    serving/topk/ds=D/model=V/            scored lists
    serving/user_topk/ds=D/               the lists as the Feast view reads them
    models/<kind>/<E>/                    model versions (two_tower, gnolr, ranker, consumer_encoder, ...)
    segments/<table>/ds=D/                segment membership, profiles, centroids, audiences
    _runs/ds=D/ and docs/runs/ds=D.html   run manifests and their report pages

Never removed, whatever their age:
- the top-k version ``serving/topk/current.json`` names and every rollback target in its history (and their
  ``user_topk`` days): a rollback must find what it points at;
- each model's champion (``models/<kind>/champion.json``);
- the newest version of every output: the next night continues from the consumer encoder's weights and the
  segments' centroids, and reads the segmentation of two nights before (``nightrec.segments.membership_night``);
  the horizon has a floor (``config.MIN_RETENTION_DAYS``) so that night is always inside it.

Inputs stay: raw, bronze, silver and the marts are the history every night learns from (the ranker's anchors reach
back a year, the item features 365 days) and what a rerun of any day rebuilds from. Directories whose names are not
days (a model version named by hand) are not ours to judge and stay.

A version is taken out of view in one rename and then deleted (``storage.retire``), so readers see it whole or not
at all; what a run killed half-way left (a hidden ``.retired-*``) the next one removes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from nightrec.config import Settings
from nightrec.storage import clean_retired, read_json, retire
from nightrec.warehouse import Warehouse, champion

log = logging.getLogger(__name__)

SEGMENT_TABLES = ("membership", "profiles", "centroids", "audiences")
WHY_A_FLOOR = "a night reads the segments of two nights before and continues from the newest versions"
NEWEST_SEGMENT_NIGHTS = 2  # the lists of day A read the segmentation of night A - 2


@dataclass(frozen=True)
class Removal:
    zone: str
    path: Path
    day: date


def _day(name: str) -> date | None:
    """The day a ``ds=YYYY-MM-DD`` folder, a ``YYYY-MM-DD`` version or a ``ds=YYYY-MM-DD.html`` page stands for."""
    text = name.removeprefix("ds=").removesuffix(".html")
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _dated(root: Path, pattern: str = "ds=*") -> list[tuple[date, Path]]:
    """The visible dated entries under ``root`` (hidden staging and trash never count), oldest first."""
    if not root.is_dir():
        return []
    found = [(_day(p.name), p) for p in root.glob(pattern) if not p.name.startswith(".")]
    return sorted((d, p) for d, p in found if d is not None)


def _older(entries: list[tuple[date, Path]], cutoff: date, keep_newest: int = 1) -> list[tuple[date, Path]]:
    """The entries before ``cutoff``, less the ``keep_newest`` newest of all."""
    candidates = entries[:-keep_newest] if keep_newest else entries
    return [(d, p) for d, p in candidates if d < cutoff]


def protected_topk(wh: Warehouse) -> tuple[set[Path], set[date]]:
    """The top-k version folders the pointer names (served and rollback targets) and their days (their own, and
    the day a rollback served them on)."""
    pointer_file = wh.serving_topk() / "current.json"
    if not pointer_file.is_file():
        return set(), set()
    pointer = read_json(pointer_file)
    entries = [pointer, *pointer.get("history", [])]
    root = wh.serving_topk()  # the pointer's paths are relative to it: the warehouse may move
    days = {date.fromisoformat(e[key]) for e in entries for key in ("ds", "served_ds") if e.get(key)}
    return {(root / e["path"]).resolve() for e in entries if e.get("path")}, days


def plan(settings: Settings, night: date) -> list[Removal]:
    """What :func:`apply` would remove on night ``night`` (nothing when retention is off)."""
    days = settings.retention.days
    if days <= 0:
        return []
    wh = Warehouse.of(settings)
    cutoff = night - timedelta(days=days - 1)
    out: list[Removal] = []

    def add(zone: str, entries: list[tuple[date, Path]]) -> None:
        out.extend(Removal(zone, p, d) for d, p in entries)

    add("candidates", _older(_dated(wh.root / "candidates"), cutoff))
    served, served_days = protected_topk(wh)
    versions = [(d, v) for d, folder in _dated(wh.serving_topk()) for v in sorted(folder.glob("model=*"))]
    add("topk", [(d, v) for d, v in _older(versions, cutoff) if v.resolve() not in served])
    user_topk = _older(_dated(wh.serving_user_topk()), cutoff)
    add("user_topk", [(d, p) for d, p in user_topk if d not in served_days])
    if wh.models().is_dir():
        for kind in sorted(p for p in wh.models().iterdir() if p.is_dir() and not p.name.startswith(".")):
            pointer = champion(wh, kind.name)
            keep = {str(pointer.get("version"))} if pointer else set()
            older = _older(_dated(kind, "*"), cutoff)
            add(f"models/{kind.name}", [(d, p) for d, p in older if p.is_dir() and p.name not in keep])
    for table in SEGMENT_TABLES:
        add(f"segments/{table}", _older(_dated(wh.segments(table)), cutoff, NEWEST_SEGMENT_NIGHTS))
    runs = _older(_dated(wh.runs()), cutoff)
    add("runs", runs)
    gone = {d for d, _ in runs}
    add("run pages", [(d, p) for d, p in _dated(wh.run_pages(), "ds=*.html") if d in gone])
    return out


def _roots(wh: Warehouse) -> list[Path]:
    """The folders retention removes versions from (where a killed run's ``.retired-*`` would be)."""
    roots = [wh.root / "candidates", wh.serving_topk(), wh.serving_user_topk(), wh.runs(), wh.run_pages()]
    roots += [wh.segments(table) for table in SEGMENT_TABLES]
    if wh.models().is_dir():
        roots += [p for p in wh.models().iterdir() if p.is_dir() and not p.name.startswith(".")]
    return roots


def apply(settings: Settings, night: date, dry_run: bool = False) -> dict[str, Any]:
    """Remove what :func:`plan` lists (or only list it); the summary the night records in its manifest."""
    removals = plan(settings, night)
    removed: dict[str, list[str]] = {}
    if not dry_run and settings.retention.days > 0:
        for directory in {r.path.parent for r in removals} | set(_roots(Warehouse.of(settings))):
            clean_retired(directory)  # what a killed retention left half-deleted
    for removal in removals:
        if not dry_run:
            retire(removal.path)
            # a top-k day whose last version went goes too
            parent = removal.path.parent
            if removal.zone == "topk" and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
        removed.setdefault(removal.zone, []).append(removal.path.name)
    days = settings.retention.days
    summary: dict[str, Any] = {
        "days": days,
        "dry_run": dry_run,
        "removed": {zone: len(names) for zone, names in removed.items()},
        "paths": removed,
    }
    if days > 0:
        summary["cutoff"] = (night - timedelta(days=days - 1)).isoformat()
    verb = "would remove" if dry_run else "removed"
    if days <= 0:
        log.info("retention: off (retention.days = 0): every version kept")
    else:
        counts = ", ".join(f"{zone} {n}" for zone, n in summary["removed"].items()) or "nothing"
        log.info(f"retention: {days} days (before {summary['cutoff']}): {verb} {counts}")
    return summary
