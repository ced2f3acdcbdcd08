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
from tests.unit.test_timeformats import CASES

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
    ("10944750,13\udce951,0,4-15", "invalid_encoding"),  # byte 0xE9 (Latin-1 "é") in the brand: not UTF-8
    ("12154500,1758,3,4-15", None),
]


def _bytes(line: str) -> bytes:
    """A fixture line as delivered (surrogate escapes stand for bytes that are not UTF-8)."""
    return line.encode("utf-8", "surrogateescape")


@pytest.fixture(scope="module")
def bad_delivery(tmp_path_factory, spark):
    tmall = load_adapter("tmall_brand")
    settings = make_settings(tmp_path_factory.mktemp("bad") / "warehouse")
    wh = Warehouse(settings.warehouse_root, tmall.name)
    drop = tmp_path_factory.mktemp("drop")
    first = drop / "events_a.csv"
    first.write_bytes(
        b"user_id,brand_id,type,visit_datetime\n" + b"".join(_bytes(line) + b"\n" for line, _ in BAD_ROWS)
    )
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
    expected = [(i + 2, _bytes(line).decode("utf-8", "replace"), why) for i, (line, why) in enumerate(BAD_ROWS) if why]
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
        "invalid_encoding": 1,
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


def test_an_empty_delivery_is_recorded_and_does_not_block_the_day(tmp_path: Path, spark, tmall):
    """A 0-byte file beside a real delivery: the day is ingested and reconciles, the empty file is listed with no rows;
    a day whose only delivery is empty ingests nothing and still reconciles (0 = 0)."""
    settings = make_settings(tmp_path / "warehouse")
    wh = Warehouse(settings.warehouse_root, tmall.name)
    day, empty_day = date(2014, 5, 1), date(2014, 5, 2)
    replay(tmall, wh, day, empty_day)
    (tmp_path / "late.csv").write_bytes(b"")
    land_file(tmall, wh, day, tmp_path / "late.csv")
    land_file(tmall, wh, empty_day, tmp_path / "late.csv")
    manifests = ingest_events.run(spark, settings, day, empty_day + timedelta(days=1))
    rows = int((raw_tmall()["visit_datetime"] == "5-1").sum())
    first = manifests[day]
    assert (first["raw_rows"], first["bronze_rows"] + first["quarantined_rows"]) == (rows, rows)
    assert [(f["name"], f["rows"], f["status"]) for f in first["files"]] == [
        ("late.csv", 0, "empty (0 bytes, no header): no rows to ingest"),
        ("t_alibaba_data.csv", rows, "ingested"),
    ]
    second = manifests[empty_day]
    assert (second["raw_rows"], second["bronze_rows"], second["quarantined_rows"]) == (0, 0, 0)
    assert len(read_table(wh.bronze_events())) == first["bronze_rows"]

    alone = make_settings(tmp_path / "alone")  # a range with nothing but the empty file: no rows, no crash
    land_file(tmall, Warehouse(alone.warehouse_root, tmall.name), empty_day, tmp_path / "late.csv")
    only = ingest_events.run(spark, alone, empty_day, empty_day + timedelta(days=1))[empty_day]
    assert (only["raw_rows"], only["bronze_rows"], only["quarantined_rows"]) == (0, 0, 0)


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


@pytest.mark.parametrize(("spec", "values", "expected"), CASES)
def test_the_spark_parser_reads_every_time_format_as_the_python_one(spark, spec, values, expected):
    """Ingest (Spark) and the raw checks and replayer (pandas) must place every value on the same instant, or call
    it invalid alike: zone suffixes and offsets, daylight-saving gaps and repeats included."""
    from pyspark.sql import functions as F

    from spark_jobs.common import parse_event_time

    frame = spark.createDataFrame([(v,) for v in values], "v string")
    got = [r[0] for r in frame.select(parse_event_time(F.col("v"), spec).alias("t")).collect()]
    assert [None if t is None else pd.Timestamp(t) for t in got] == [pd.Timestamp(e) if e else None for e in expected]


def test_unusual_but_valid_deliveries_are_ingested_whole(tmp_path: Path, spark, tmall):
    """Real rows of one day delivered in shapes a shop's export takes: a new column, columns in another order, a
    header-only file, near duplicates (the same action twice) and one user with 100,000 events in the day. Every row
    is accounted for, and each real row reaches bronze."""
    settings = make_settings(tmp_path / "warehouse")
    wh = Warehouse(settings.warehouse_root, tmall.name)
    day = date(2014, 5, 1)
    real = raw_tmall()
    rows = real[real["visit_datetime"] == "5-1"]
    drop = tmp_path / "drop"
    drop.mkdir()
    with_channel = rows.head(200).assign(channel="app")[["user_id", "channel", "brand_id", "type", "visit_datetime"]]
    with_channel.to_csv(drop / "a_new_column.csv", index=False)
    rows.iloc[200:400][["visit_datetime", "type", "brand_id", "user_id"]].to_csv(drop / "b_reordered.csv", index=False)
    (drop / "c_header_only.csv").write_text("user_id,brand_id,type,visit_datetime\n")
    twice = pd.concat([rows.iloc[400:450], rows.iloc[400:450]])
    twice.to_csv(drop / "d_near_duplicates.csv", index=False)
    user, brand = rows.iloc[0]["user_id"], rows.iloc[0]["brand_id"]
    one_click = {"user_id": user, "brand_id": brand, "type": "0", "visit_datetime": "5-1"}
    busy = pd.DataFrame(one_click, index=range(100_000))
    busy.to_csv(drop / "e_busy_user.csv", index=False)
    for f in sorted(drop.iterdir()):
        land_file(tmall, wh, day, f)

    manifest = ingest_events.run(spark, settings, day, day + timedelta(days=1))[day]
    expected = 200 + 200 + 0 + 100 + 100_000
    assert (manifest["raw_rows"], manifest["bronze_rows"], manifest["quarantined_rows"]) == (expected, expected, 0)
    bronze = read_table(wh.bronze_events())
    per_file = bronze.groupby("source_file").size().to_dict()
    assert per_file == {
        "a_new_column.csv": 200,
        "b_reordered.csv": 200,
        "d_near_duplicates.csv": 100,
        "e_busy_user.csv": 100_000,
    }
    reordered = bronze[bronze["source_file"] == "b_reordered.csv"].sort_values("source_line")
    assert reordered["item_id"].tolist() == rows.iloc[200:400]["brand_id"].tolist()
    assert [f["rows"] for f in manifest["files"]] == [200, 200, 0, 100, 100_000]


def test_a_source_with_its_own_event_ids_quarantines_a_resent_event(tmp_path: Path, spark, monkeypatch):
    """A source that delivers its own event id (none of the bundled ones does): real rows with ids, three of them sent
    again in a later file of the day; the repeats are quarantined as duplicate_event_id, the first copies kept."""
    import shutil

    from nightrec.config import SOURCES_DIR

    sources = tmp_path / "sources"
    sources.mkdir()
    shutil.copy(SOURCES_DIR / "tmall_brand.yaml", sources)
    text = (SOURCES_DIR / "tmall_brand.yaml").read_text().replace("name: tmall_brand", "name: tmall_ids")
    text = text.replace("    user_id: user_id\n", "    user_id: user_id\n    event_id: event_id\n")
    (sources / "tmall_ids.yaml").write_text(text)
    monkeypatch.setattr("nightrec.adapters.SOURCES_DIR", sources)
    adapter = load_adapter("tmall_ids")
    settings = make_settings(tmp_path / "warehouse", source=adapter.name)
    wh = Warehouse(settings.warehouse_root, adapter.name)
    day = date(2014, 5, 1)
    rows = raw_tmall()
    rows = rows[rows["visit_datetime"] == "5-1"].assign(event_id=lambda f: [f"e{i}" for i in range(len(f))])
    rows.to_csv(tmp_path / "a_events.csv", index=False)
    rows.head(3).to_csv(tmp_path / "b_resent.csv", index=False)
    for name in ("a_events.csv", "b_resent.csv"):
        land_file(adapter, wh, day, tmp_path / name)

    manifest = ingest_events.run(spark, settings, day, day + timedelta(days=1))[day]
    assert (manifest["raw_rows"], manifest["bronze_rows"]) == (len(rows) + 3, len(rows))
    assert manifest["quarantine_reasons"] == {"duplicate_event_id": 3}
    quarantine = read_table(wh.bronze_quarantine())
    assert set(quarantine["source_file"]) == {"b_resent.csv"}
    assert read_table(wh.bronze_events())["event_id"].is_unique
