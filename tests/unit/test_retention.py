"""Retention on a warehouse laid out as twenty nights leave it (synthetic folders: the edge cases of what must stay
are the point here; the DAG task runs on the real e2e warehouse): the old versions go, the served lists, their
rollback targets, the champions, the newest versions and the inputs stay."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import pytest

from nightrec import retention
from nightrec.config import ConfigError, Settings, load_settings
from nightrec.warehouse import Warehouse
from tests.conftest import make_settings

NIGHT = date(2014, 8, 20)
DAYS = [date(2014, 8, 1) + timedelta(days=i) for i in range(20)]  # 08-01 .. 08-20
KEPT_FROM = date(2014, 8, 14)  # seven days: 08-14 .. 08-20


def _touch(path: Path, text: str = "x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    base = make_settings(tmp_path / "warehouse")
    s = base.with_overrides(retention=replace(base.retention, days=7))
    wh = Warehouse.of(s)
    for day in DAYS:
        ds = f"ds={day}"
        _touch(wh.root / "candidates" / ds / f"anchor={day + timedelta(days=1)}" / "part-0.parquet")
        _touch(wh.serving_topk() / ds / f"model=ranker-{day}" / "_SUCCESS")
        _touch(wh.serving_user_topk() / ds / "part-0.parquet")
        for kind in ("two_tower", "ranker", "consumer_encoder"):
            _touch(wh.model_dir(kind, day.isoformat()) / "metrics.json")
        for table in ("membership", "profiles", "centroids"):
            _touch(wh.segments(table) / ds / "_SUCCESS")
        _touch(wh.run_manifest(day), "{}")
        _touch(wh.run_pages() / f"{ds}.html")
        _touch(wh.bronze_events() / ds / "part-0.parquet")  # an input: never retention's
        _touch(wh.silver_sequences() / ds / "part-0.parquet")
    for day in DAYS[:5]:  # saved audiences stopped after 08-05: their two newest nights stay though old
        _touch(wh.segments("audiences") / f"ds={day}" / "_SUCCESS")
    for day in DAYS[:3]:  # a model trained only on the first three nights: its newest version stays
        _touch(wh.model_dir("gnolr", day.isoformat()) / "metrics.json")
    _touch(wh.model_dir("ranker", "learns-nothing") / "metrics.json")  # named by hand: not ours to judge
    _touch(wh.champion_pointer("two_tower"), json.dumps({"version": "2014-08-03"}))
    _touch(wh.run_pages() / "index.html")
    pointer = {
        "ds": "2014-08-20",
        "model_version": "ranker-2014-08-20",
        "path": "ds=2014-08-20/model=ranker-2014-08-20",
    }
    history = [
        {"ds": "2014-08-02", "model_version": "ranker-2014-08-02", "path": "ds=2014-08-02/model=ranker-2014-08-02"},
        {"ds": "2014-08-19", "model_version": "ranker-2014-08-19", "path": "ds=2014-08-19/model=ranker-2014-08-19"},
    ]
    _touch(wh.serving_topk() / "current.json", json.dumps({**pointer, "history": history}))
    return s


def _days(root: Path, pattern: str = "ds=*") -> list[date]:
    return sorted(date.fromisoformat(p.name.removeprefix("ds=").removesuffix(".html")) for p in root.glob(pattern))


def test_old_versions_go_what_is_served_named_or_newest_stays(settings):
    wh = Warehouse.of(settings)
    _touch(wh.root / "candidates" / ".retired-ds=2014-07-31-0123456789ab" / "part-0.parquet")  # a killed retirement
    _touch(wh.root / "candidates" / ".tmp-ds=2014-08-21-0123456789ab" / "part-0.parquet")  # a live writer's
    summary = retention.apply(settings, NIGHT)
    recent = [d for d in DAYS if d >= KEPT_FROM]
    assert summary["cutoff"] == str(KEPT_FROM)
    assert _days(wh.root / "candidates") == recent
    # the rollback target of 08-02 survives with its Feast day; every other old top-k day is gone whole
    assert _days(wh.serving_topk()) == [date(2014, 8, 2), *recent]
    assert _days(wh.serving_user_topk()) == [date(2014, 8, 2), *recent]
    assert (wh.serving_topk() / "current.json").is_file()
    assert sorted(p.name for p in wh.model_dir("two_tower", "x").parent.iterdir()) == [
        "2014-08-03",  # the champion
        *[d.isoformat() for d in recent],
        "champion.json",
    ]
    assert sorted(p.name for p in (wh.models() / "ranker").iterdir()) == [
        *[d.isoformat() for d in recent],
        "learns-nothing",
    ]
    assert [p.name for p in (wh.models() / "gnolr").iterdir()] == ["2014-08-03"]  # its newest, however old
    for table in ("membership", "profiles", "centroids"):
        assert _days(wh.segments(table)) == recent
    assert _days(wh.segments("audiences")) == [date(2014, 8, 4), date(2014, 8, 5)]  # the two newest nights
    assert _days(wh.runs()) == recent
    assert _days(wh.run_pages(), "ds=*.html") == recent and (wh.run_pages() / "index.html").is_file()
    assert _days(wh.bronze_events()) == DAYS and _days(wh.silver_sequences()) == DAYS  # inputs untouched
    assert summary["removed"] == {
        "candidates": 13,
        "topk": 12,
        "user_topk": 12,
        "models/consumer_encoder": 13,
        "models/gnolr": 2,
        "models/ranker": 13,
        "models/two_tower": 12,
        "segments/membership": 13,
        "segments/profiles": 13,
        "segments/centroids": 13,
        "segments/audiences": 3,
        "runs": 13,
        "run pages": 13,
    }
    assert not list(wh.root.rglob(".retired-*"))  # the killed retirement's leftover went too
    assert (wh.root / "candidates" / ".tmp-ds=2014-08-21-0123456789ab").is_dir()  # never a writer's staging
    again = retention.apply(settings, NIGHT)  # idempotent: a rerun of the night removes nothing more
    assert again["removed"] == {}


def test_a_dry_run_lists_the_same_and_removes_nothing(settings):
    wh = Warehouse.of(settings)
    listed = retention.apply(settings, NIGHT, dry_run=True)
    assert listed["dry_run"] and listed["removed"]["candidates"] == 13
    assert _days(wh.root / "candidates") == DAYS and _days(wh.runs()) == DAYS


def test_retention_is_off_by_default_and_a_horizon_below_the_floor_is_refused(settings):
    off = settings.with_overrides(retention=replace(settings.retention, days=0))
    assert retention.plan(off, NIGHT) == []
    assert retention.apply(off, NIGHT)["removed"] == {}
    assert load_settings("local", env={}).retention.days == 0
    assert load_settings("local", env={"NIGHTREC_SET": "retention.days=30"}).retention.days == 30
    with pytest.raises(ConfigError, match="at least 7"):
        load_settings("local", env={"NIGHTREC_SET": "retention.days=3"})


def test_the_command_lists_first_and_removes_only_with_apply(settings, capsys):
    from nightrec_app.cli import main

    wh = Warehouse.of(settings)
    common = ["--day", str(NIGHT), "--warehouse", str(wh.root)]
    assert main(["retention", "--days", "7", *common]) == 0
    out = capsys.readouterr().out
    assert "keeps everything from 2014-08-14 on; would remove" in out and "candidates: 13" in out
    assert _days(wh.root / "candidates") == DAYS
    assert main(["retention", "--days", "3", *common]) == 2
    assert "at least 7" in capsys.readouterr().err
    assert main(["retention", "--days", "7", "--apply", *common]) == 0
    assert "removed:" in capsys.readouterr().out and _days(wh.root / "candidates")[0] == KEPT_FROM
