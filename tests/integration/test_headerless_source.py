"""A source whose CSV has no header (as Taobao's UserBehavior export): described by `events.header: false` and
`events.fields`, replayed, checked and ingested like any other, on real Tmall rows written without their header."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest

from nightrec.adapters import load_adapter
from nightrec.errors import ConfigError
from nightrec.landing import land_file, replay
from nightrec.warehouse import Warehouse
from spark_jobs import ingest_events
from tests.conftest import make_settings, raw_tmall, read_table

pytestmark = pytest.mark.spark

START = date(2014, 4, 15)
ADAPTER = """\
name: tmall_headerless
description: the Tmall log written without its header line
bundled:
  events: {bundled}
history: {{start: 2014-04-15, end: 2014-08-15}}
nightly_start: 2014-08-14
events:
  header: false
  fields: [user_id, brand_id, type, visit_datetime]
  columns: {{user_id: user_id, item_id: brand_id, event_type: type, event_time: visit_datetime}}
  event_type_names: {{"0": click, "1": buy, "2": collect, "3": cart}}
  levels: {{click: 1, collect: 2, cart: 3, buy: 4}}
  time: {{format: month-day, year: 2014}}
"""


@pytest.fixture
def headerless(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The first three days of the real log without a header, and a source adapter describing them."""
    raw = raw_tmall()
    days = raw[raw["visit_datetime"].isin(["4-15", "4-16", "4-17"])]
    history = tmp_path / "user_behavior.csv"
    days.to_csv(history, index=False, header=False)
    sources = tmp_path / "sources"
    sources.mkdir()
    (sources / "tmall_headerless.yaml").write_text(ADAPTER.format(bundled=history))
    monkeypatch.setattr("nightrec.adapters.SOURCES_DIR", sources)
    return load_adapter("tmall_headerless"), days


def test_a_headerless_csv_is_replayed_checked_and_ingested_row_for_row(headerless, tmp_path, spark):
    from nightrec.quality.frames import raw_frame

    adapter, days = headerless
    settings = make_settings(tmp_path / "warehouse", source=adapter.name)
    wh = Warehouse(settings.warehouse_root, adapter.name)
    end = START + timedelta(days=3)
    report = replay(adapter, wh, START, end)
    assert report.rows == len(days) and report.outside == {}
    first_day = (wh.raw_day(START) / "user_behavior.csv").read_text().splitlines()
    assert first_day[0].split(",")[3] == "4-15"  # no header: the first line is a row
    assert len(first_day) == (days["visit_datetime"] == "4-15").sum()

    # a late delivery with one broken line: counted, checked and quarantined on its own line number
    late = tmp_path / "late.csv"
    late.write_text("12154500,1758,3,4-17\n12154500,1758\n")
    assert land_file(adapter, wh, START + timedelta(days=2), late).rows == 2
    frame = raw_frame(adapter, wh, [START + timedelta(days=2)])
    broken = frame[frame["_file"] == "late.csv"]
    assert broken["_line"].tolist() == [1, 2] and broken["_n_fields"].tolist() == [4, 2]

    manifests = ingest_events.run(spark, settings, START, end)
    assert sum(m["raw_rows"] for m in manifests.values()) == len(days) + 2
    assert sum(m["bronze_rows"] for m in manifests.values()) == len(days) + 1
    quarantine = read_table(wh.bronze_quarantine())
    assert quarantine[["source_file", "source_line", "reason"]].values.tolist() == [["late.csv", 2, "malformed_row"]]
    bronze = read_table(wh.bronze_events())
    replayed = bronze[bronze["source_file"] == "user_behavior.csv"].sort_values(["ds", "source_line"])
    first = replayed[replayed["ds"].astype(str) == str(START)]
    assert first["source_line"].tolist() == list(range(1, len(first) + 1))
    assert sorted(replayed["item_id"]) == sorted(days["brand_id"])


def test_a_headerless_adapter_must_name_its_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    sources = tmp_path / "sources"
    sources.mkdir()
    text = ADAPTER.format(bundled="x.csv").replace("  fields: [user_id, brand_id, type, visit_datetime]\n", "")
    (sources / "tmall_headerless.yaml").write_text(text)
    monkeypatch.setattr("nightrec.adapters.SOURCES_DIR", sources)
    with pytest.raises(ConfigError, match=r"events\.header: false needs a CSV source and events\.fields"):
        load_adapter("tmall_headerless")
    (sources / "tmall_headerless.yaml").write_text(text.replace("  header: false\n", "  fields: [a, b]\n"))
    with pytest.raises(ConfigError, match=r"events\.fields .* is only for a CSV without a header"):
        load_adapter("tmall_headerless")
