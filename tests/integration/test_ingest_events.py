"""spark_jobs/ingest_events on the real data: counts reconcile, bad rows land in quarantine with reasons."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from nightrec.adapters import load_adapter
from nightrec.errors import InputError
from nightrec.landing import land_file, replay
from nightrec.storage import SUCCESS_FILE
from nightrec.warehouse import Warehouse
from spark_jobs import ingest_events
from tests.conftest import make_settings, raw_tmall, read_table

pytestmark = pytest.mark.spark


def test_every_tmall_row_reaches_bronze_and_reconciles_day_by_day(tmall_warehouse, tmall):
    wh = Warehouse(tmall_warehouse.warehouse_root, tmall.name)
    raw = raw_tmall()
    bronze = read_table(wh.bronze_events())
    assert len(bronze) == len(raw) == 182_880
    assert bronze["event_id"].is_unique
    # Identical rows of a day are repeated actions, not duplicates: all kept.
    assert raw.duplicated().sum() == bronze.duplicated(["user_id", "item_id", "event_type", "ds"]).sum() == 97_850

    per_day_raw = raw.groupby("visit_datetime").size()
    for part in sorted(wh.bronze_events().glob("ds=*")):
        manifest = json.loads((part / SUCCESS_FILE).read_text())
        ds = date.fromisoformat(manifest["ds"])
        assert manifest["raw_rows"] == per_day_raw[f"{ds.month}-{ds.day}"]
        assert (
            manifest["raw_rows"]
            == manifest["bronze_rows"] + manifest["quarantined_rows"] + manifest["redelivered_rows"]
        )
        assert manifest["quarantined_rows"] == 0
    assert len(list(wh.bronze_events().glob("ds=*"))) == 123


def test_bronze_follows_the_contract(tmall_warehouse, tmall):
    wh = Warehouse(tmall_warehouse.warehouse_root, tmall.name)
    bronze = read_table(wh.bronze_events(), [date(2014, 6, 4)])
    raw = raw_tmall()
    raw_day = raw[raw["visit_datetime"] == "6-4"]
    assert len(bronze) == len(raw_day)
    words = {"0": "click", "1": "buy", "2": "collect", "3": "cart"}
    assert bronze["event_type"].value_counts().to_dict() == raw_day["type"].map(words).value_counts().to_dict()
    assert (bronze["level"] == bronze["event_type"].map(tmall.levels)).all()
    assert (bronze["event_ts"] == pd.Timestamp("2014-06-04", tz="UTC")).all()  # day grain -> D 00:00 UTC
    assert set(bronze["source"]) == {"tmall_brand"}
    # Lineage: the source line points at the very row in the delivered file.
    delivered = (wh.raw_day(date(2014, 6, 4)) / "t_alibaba_data.csv").read_text().splitlines()
    sample = bronze.sample(20, random_state=1)
    for row in sample.itertuples():
        user, brand, code, _ = delivered[row.source_line - 1].split(",")
        assert (user, brand, words[code]) == (row.user_id, row.item_id, row.event_type)


# Real rows of 2014-04-15 plus one injected defect per line, with the reason each must get.
BAD_ROWS = [
    ("10944750,13451,0,4-15", None),
    ("10944750,13451,0,4-15", None),  # an identical row: a second real click, kept
    ("10944750,13451,2,4-15", None),
    (",13451,0,4-15", "missing_user_id"),
    ("10944750,,1,4-15", "missing_item_id"),
    ("10944750,13451,7,4-15", "unknown_event_type"),
    ("10944750,13451,0,13-45", "unparseable_event_time"),
    ("10944750,13451,0,", "missing_event_time"),
    ("10944750,13451,0,4-16", "event_time_outside_delivery_day"),
    ("10944750,13451", "malformed_row"),
    ("10944750,13451,0,4-15,extra", "malformed_row"),
    ("", "blank_line"),
    ("12154500,1758,3,4-15", None),
]


@pytest.fixture(scope="module")
def bad_delivery(tmp_path_factory, spark):
    tmall = load_adapter("tmall_brand")
    settings = make_settings(tmp_path_factory.mktemp("bad") / "warehouse")
    wh = Warehouse(settings.warehouse_root, tmall.name)
    drop = tmp_path_factory.mktemp("drop")
    first = drop / "events_a.csv"
    first.write_text("user_id,brand_id,type,visit_datetime\n" + "".join(f"{line}\n" for line, _ in BAD_ROWS))
    again = drop / "events_b.csv"
    again.write_bytes(first.read_bytes())  # the same file delivered twice under another name
    ds = tmall.history_start
    land_file(tmall, wh, ds, first)
    assert land_file(tmall, wh, ds, again).status == "redelivered"
    manifests = ingest_events.run(spark, settings, ds, ds + timedelta(days=1))
    return settings, wh, manifests[ds]


def test_bad_rows_are_quarantined_with_their_reason(bad_delivery):
    _, wh, manifest = bad_delivery
    quarantine = read_table(wh.bronze_quarantine()).sort_values("source_line")
    expected = [(i + 2, line, reason) for i, (line, reason) in enumerate(BAD_ROWS) if reason]
    got = list(zip(quarantine["source_line"], quarantine["raw_line"], quarantine["reason"], strict=True))
    assert got == expected
    assert set(quarantine["source_file"]) == {"events_a.csv"}

    bronze = read_table(wh.bronze_events())
    good = [line for line, reason in BAD_ROWS if reason is None]
    assert len(bronze) == len(good) == 4
    assert bronze["event_id"].is_unique

    rows = len(BAD_ROWS)
    assert manifest["raw_rows"] == 2 * rows
    assert manifest["redelivered_rows"] == rows
    assert manifest["bronze_rows"] == 4 and manifest["quarantined_rows"] == rows - 4
    assert manifest["quarantine_reasons"] == {
        "blank_line": 1,
        "event_time_outside_delivery_day": 1,
        "malformed_row": 2,
        "missing_event_time": 1,
        "missing_item_id": 1,
        "missing_user_id": 1,
        "unknown_event_type": 1,
        "unparseable_event_time": 1,
    }
    statuses = [f["status"] for f in manifest["files"]]
    assert statuses == ["ingested", "redelivered (same bytes as events_a.csv)"]


def test_rerun_gives_identical_tables(bad_delivery, spark):
    settings, wh, manifest = bad_delivery
    before_b, before_q = read_table(wh.bronze_events()), read_table(wh.bronze_quarantine())
    ds = date.fromisoformat(manifest["ds"])
    again = ingest_events.run(spark, settings, ds, ds + timedelta(days=1))[ds]
    assert again == manifest
    pd.testing.assert_frame_equal(read_table(wh.bronze_events()), before_b)
    pd.testing.assert_frame_equal(read_table(wh.bronze_quarantine()), before_q)
    assert not [p for p in wh.bronze_events().parent.rglob(".tmp-*")]


def test_missing_delivery_fails_loudly(tmp_path: Path, spark):
    settings = make_settings(tmp_path / "warehouse")
    with pytest.raises(
        InputError,
        match=r"No delivery for source 'tmall_brand' day 2014-05-01: expected files "
        r"matching '\*\.csv' in .*raw/tmall_brand/ds=2014-05-01",
    ):
        ingest_events.run(spark, settings, date(2014, 5, 1), date(2014, 5, 2))
    assert not (tmp_path / "warehouse" / "bronze" / "events").exists()


def test_wrong_header_fails_loudly(tmp_path: Path, spark, tmall):
    settings = make_settings(tmp_path / "warehouse")
    wh = Warehouse(settings.warehouse_root, tmall.name)
    f = tmp_path / "x.csv"
    f.write_text("customer_id,article_id,t_dat\na,b,2014-05-01\n")
    land_file(tmall, wh, date(2014, 5, 1), f)
    with pytest.raises(
        InputError, match=r"x\.csv: header .* lacks column\(s\) \['user_id', 'brand_id', 'type', 'visit_datetime'\]"
    ):
        ingest_events.run(spark, settings, date(2014, 5, 1), date(2014, 5, 2))


@pytest.mark.parametrize(
    ("source", "start", "days"), [("hm", date(2019, 11, 25), 7), ("movielens", date(2016, 4, 1), 10)]
)
def test_other_sources_ingest_completely(tmp_path: Path, spark, source: str, start: date, days: int):
    """The Python replayer and the Spark parser agree on every row's day (nothing lands outside its day)."""
    adapter = load_adapter(source)
    settings = make_settings(tmp_path / "warehouse", source=source)
    wh = Warehouse(settings.warehouse_root, source)
    end = start + timedelta(days=days)
    report = replay(adapter, wh, start, end)
    manifests = ingest_events.run(spark, settings, start, end)
    assert sum(m["raw_rows"] for m in manifests.values()) == report.rows > 0
    assert sum(m["bronze_rows"] for m in manifests.values()) == report.rows
    bronze = read_table(wh.bronze_events())
    raw = pd.read_csv(adapter.bundled_events, dtype=str, keep_default_na=False)
    if source == "hm":
        assert bronze["item_id"].str.startswith("0").all()  # article ids keep their leading zero
        assert set(bronze["event_type"]) == {"purchase"} and set(bronze["level"]) == {1}
        in_range = raw[(raw["t_dat"] >= str(start)) & (raw["t_dat"] < str(end))]
        assert sorted(bronze["item_id"]) == sorted(in_range["article_id"])
    else:
        ts = pd.to_datetime(raw["timestamp"].astype(int), unit="s", utc=True)
        in_range = raw[(ts >= pd.Timestamp(start, tz="UTC")) & (ts < pd.Timestamp(end, tz="UTC"))]
        assert len(bronze) == len(in_range)
        expected = in_range["rating"].map(adapter.levels).value_counts().sort_index()
        assert bronze["level"].value_counts().sort_index().tolist() == expected.tolist()
