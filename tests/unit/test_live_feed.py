"""A live feed: a source with no bundled history, whose days are the files the user lands. The nightly `land` task
replays nothing, records what was delivered, and stops with the command to run when a day has no delivery."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest

from nightrec.adapters import load_adapter
from nightrec.config import SOURCES_DIR
from nightrec.context import RunContext
from nightrec.errors import InputError
from nightrec.landing import land_file, replay
from nightrec.run_manifest import read_run_manifest
from nightrec.warehouse import Warehouse
from nightrec_app.tasks import land_days
from tests.conftest import make_settings, raw_tmall

FEED = """\
name: tmall_feed
description: the Tmall log as a shop would deliver it, one file a day, no bundled history
history: {start: 2014-04-15, end: 2014-08-15}
events:
  columns: {user_id: user_id, item_id: brand_id, event_type: type, event_time: visit_datetime}
  event_type_names: {"0": click, "1": buy, "2": collect, "3": cart}
  levels: {click: 1, collect: 2, cart: 3, buy: 4}
  time: {format: month-day, year: 2014}
"""

OPEN = ", end: 2014-08-15"  # without it: an open-ended feed


@pytest.fixture
def feed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    sources = tmp_path / "sources"
    sources.mkdir()
    (sources / "tmall_feed.yaml").write_text(FEED)
    shutil.copy(SOURCES_DIR / "tmall_brand.yaml", sources)  # the bundled source beside it
    monkeypatch.setattr("nightrec.adapters.SOURCES_DIR", sources)
    return load_adapter("tmall_feed")


def test_a_feed_needs_neither_a_bundled_history_nor_a_nightly_start(feed):
    assert feed.is_feed and feed.bundled_events is None
    assert feed.nightly_start == feed.history_start == date(2014, 4, 15)
    assert not load_adapter("tmall_brand").is_feed


def test_a_feed_may_leave_its_end_open_and_runs_up_to_yesterday(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from datetime import UTC, datetime, timedelta

    from nightrec.errors import ConfigError

    sources = tmp_path / "sources"
    sources.mkdir()
    (sources / "open_feed.yaml").write_text(FEED.replace("name: tmall_feed", "name: open_feed").replace(OPEN, ""))
    bundled = (SOURCES_DIR / "tmall_brand.yaml").read_text()
    (sources / "open_history.yaml").write_text(
        bundled.replace("name: tmall_brand", "name: open_history").replace("end: 2014-08-15", "")
    )
    monkeypatch.setattr("nightrec.adapters.SOURCES_DIR", sources)
    feed = load_adapter("open_feed")
    assert feed.open_ended and feed.history_end == datetime.now(UTC).date() - timedelta(days=1)
    assert feed.history_start == feed.nightly_start == date(2014, 4, 15)
    with pytest.raises(ConfigError, match=r"history\.end is required in .*a bundled history is replayed up to it"):
        load_adapter("open_history")


def test_the_land_task_of_a_feed_records_the_deliveries_and_names_the_command_for_a_missing_day(feed, tmp_path):
    settings = make_settings(tmp_path / "warehouse", source=feed.name)
    wh = Warehouse(settings.warehouse_root, feed.name)
    raw = raw_tmall()
    days = [date(2014, 4, 15), date(2014, 4, 16)]
    for ds in days:  # the shop's own export of each day: real rows
        export = tmp_path / f"export_{ds}.csv"
        raw[raw["visit_datetime"] == f"{ds.month}-{ds.day}"].to_csv(export, index=False)
        assert land_file(feed, wh, ds, export).status == "landed"

    summary = land_days(RunContext.of(settings, days[0], date(2014, 4, 17)), "nightly", "run_1")
    rows = int(raw["visit_datetime"].isin(["4-15", "4-16"]).sum())
    assert summary == {"days": 2, "files": 2, "rows": rows}
    first = read_run_manifest(wh, days[0])
    assert first["stages"]["land"]["by"] == "delivery"
    assert first["stages"]["land"]["files"][0]["file"] == "export_2014-04-15.csv"
    assert first["attempt"]["run_id"] == "run_1" and first["attempt"]["state"] == "running"
    assert sorted(p.name for p in wh.raw_day(days[0]).iterdir()) == ["export_2014-04-15.csv"]  # nothing replayed

    with pytest.raises(
        InputError, match=r"No delivery .* day 2014-04-17.*`nightrec land --file <file> --ds 2014-04-17`\.$"
    ):
        land_days(RunContext.of(settings, days[0], date(2014, 4, 18)), "nightly", "run_2")
    with pytest.raises(InputError, match=r"is a live feed .* land each delivered file with `nightrec land --file F"):
        replay(feed, wh, days[0], days[1])
