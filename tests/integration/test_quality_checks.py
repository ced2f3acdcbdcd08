"""Great Expectations at the raw and bronze boundaries, on real Tmall deliveries and tampered copies of them."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from nightrec.context import RunContext
from nightrec.errors import QualityCheckFailed
from nightrec.landing import land_file, replay
from nightrec.warehouse import Warehouse
from nightrec_app.tasks import validate_boundary
from tests.conftest import corrupt_real_rows, make_settings

DAYS = (date(2014, 8, 13), date(2014, 8, 16))  # [start, end): three delivered days
BAD_DAY = date(2014, 8, 15)


@pytest.fixture
def landed(tmp_path: Path, tmall) -> Warehouse:
    """Three real days landed in a fresh warehouse."""
    wh = Warehouse(tmp_path, tmall.name)
    replay(tmall, wh, *DAYS)
    return wh


def corrupted_delivery(wh: Warehouse, path: Path, n_rows: int) -> list[int]:
    return corrupt_real_rows(wh.raw_day(BAD_DAY) / "t_alibaba_data.csv", path, n_rows)


def run(boundary: str, root: Path, chunk_days: int | None = None) -> dict:
    """The DAG task's check of `boundary` over DAYS, on the warehouse at `root` (in chunks of `chunk_days`)."""
    settings = make_settings(root)
    if chunk_days is not None:
        settings = settings.with_overrides(quality=replace(settings.quality, check_chunk_days=chunk_days))
    return validate_boundary(RunContext.of(settings, *DAYS), boundary, "nightly", "manual__test")


def quality_section(wh: Warehouse, ds: date, boundary: str) -> dict:
    return json.loads(wh.run_manifest(ds).read_text())["stages"][f"quality_{boundary}"]


def test_real_deliveries_pass_every_raw_expectation(landed):
    out = run("raw", landed.root)
    assert out["tables"]["raw.events"]["rows"] == sum(
        len(pd.read_csv(f, dtype=str))
        for d in ("13", "14", "15")
        for f in landed.raw_day(date(2014, 8, int(d))).iterdir()
    )
    assert out["tables"]["raw.events"]["passed"] == out["tables"]["raw.events"]["expectations"]
    assert out["warnings"] == 0
    section = quality_section(landed, BAD_DAY, "raw")
    assert section["success"] and section["critical"] == [] and section["warnings"] == []
    assert (landed.root / "docs" / "gx" / "index.html").is_file()


def test_a_few_bad_rows_are_warnings_that_name_their_lines(landed, tmall, tmp_path):
    delivery = tmp_path / "late_fixes.csv"
    broken = corrupted_delivery(landed, delivery, 40)  # 30 bad rows of ~5,400: under the 1% tolerance
    land_file(tmall, landed, BAD_DAY, delivery)
    out = run("raw", landed.root)
    assert out["warnings"] == 3
    section = quality_section(landed, BAD_DAY, "raw")
    assert section["success"] is True
    lines = {w["expectation"].split("(column=")[1].split(",")[0].rstrip(")"): w for w in section["warnings"]}
    assert set(lines) == {"'user_id'", "'type'", "'_days_off'"}
    for column, first in (("'user_id'", 2), ("'type'", 3), ("'_days_off'", 4)):
        assert "10 of" in lines[column]["summary"] and "within tolerance" in lines[column]["summary"]
        sample = lines[column]["samples"][0]
        assert (sample["_file"], sample["_line"]) == ("late_fixes.csv", first)
        assert first in broken
    assert lines["'type'"]["samples"][0]["type"] == "7"
    assert lines["'_days_off'"]["samples"][0]["visit_datetime"] == "8-20"

    # real rows of the day with a Latin-1 byte in the brand: a warning on the encoding, naming the lines (#24)
    real = (landed.raw_day(BAD_DAY) / "t_alibaba_data.csv").read_bytes().split(b"\n")
    latin = tmp_path / "latin1_export.csv"
    latin.write_bytes(b"\n".join([real[0], *(row.replace(b",", b"\xe9,", 1) for row in real[1:6])]) + b"\n")
    land_file(tmall, landed, BAD_DAY, latin)
    run("raw", landed.root)
    encoding = [w for w in quality_section(landed, BAD_DAY, "raw")["warnings"] if "_valid_utf8" in w["expectation"]]
    assert len(encoding) == 1 and "each line is UTF-8 text" in encoding[0]["expectation"]
    assert "5 of" in encoding[0]["summary"]
    assert [(r["_file"], r["_line"]) for r in encoding[0]["samples"]][:2] == [
        ("latin1_export.csv", 2),
        ("latin1_export.csv", 3),
    ]


def test_a_corrupted_delivery_stops_with_table_expectation_and_sample_rows(landed, tmall, tmp_path):
    delivery = tmp_path / "bad.csv"
    corrupted_delivery(landed, delivery, 400)  # 100 rows of each kind: ~1.7% each, over the tolerance
    land_file(tmall, landed, BAD_DAY, delivery)
    with pytest.raises(QualityCheckFailed) as failure:
        run("raw", landed.root)
    message = str(failure.value)
    assert "Data quality check 'raw' failed: 3 critical expectation(s)" in message
    assert "raw.events: expect_column_values_to_not_be_null(column='user_id'): 100 of" in message
    assert "event type known to the adapter: expect_column_values_to_be_in_set(column='type'" in message
    assert "event time inside the delivery day" in message
    assert "_file='bad.csv', _line=2, user_id=None" in message  # the offending row itself
    assert "type='7'" in message and "visit_datetime='8-20'" in message
    assert str(landed.root / "docs" / "gx" / "index.html") in message
    section = quality_section(landed, BAD_DAY, "raw")
    assert section["success"] is False and len(section["critical"]) == 3


def test_a_file_missing_a_mapped_column_fails_the_schema_check(landed, tmall, tmp_path):
    delivery = tmp_path / "no_type.csv"
    delivery.write_text("user_id,brand_id,visit_datetime\n10944750,13450,8-15\n")
    land_file(tmall, landed, BAD_DAY, delivery)
    with pytest.raises(QualityCheckFailed, match=r"every file has every mapped column.*\n.*_file='no_type.csv'"):
        run("raw", landed.root)


def test_bronze_checks_pass_on_the_real_history_and_catch_tampering(tmall_warehouse, tmall, tmp_path):
    real = Warehouse(tmall_warehouse.warehouse_root, tmall.name)
    whole_history = RunContext.of(tmall_warehouse, tmall.history_start, "2014-08-16")
    whole = validate_boundary(whole_history, "bronze", "bootstrap", "manual__test")
    # 123 days, checked 14 at a time (quality.check_chunk_days): nine chunks whose rows add up to all of bronze
    assert len(whole_history.days) == 123 and whole_history.settings.quality.check_chunk_days == 14
    assert whole["tables"]["bronze.events"]["chunks"] == 9
    assert whole["tables"]["bronze.events"]["rows"] == 182_880
    assert whole["tables"]["bronze.events"]["passed"] == whole["tables"]["bronze.events"]["expectations"]
    assert whole["tables"]["bronze.item_attributes"]["chunks"] == 1  # the snapshot, once

    # A copy of three days of bronze with one event id repeated and one level out of range.
    copy = Warehouse(tmp_path, tmall.name)
    for ds in (date(2014, 8, 13), date(2014, 8, 14), BAD_DAY):
        for table in ("bronze_events", "bronze_quarantine"):
            shutil.copytree(getattr(real, table)() / f"ds={ds}", getattr(copy, table)() / f"ds={ds}")
    part = next((copy.bronze_events() / f"ds={BAD_DAY}").glob("*.parquet"))
    events = pd.read_parquet(part)
    events.loc[1, "event_id"] = events.loc[0, "event_id"]
    events.loc[5, "level"] = 9
    events.to_parquet(part, index=False)
    checked = {}
    for chunk_days in (14, 1):  # the three days as one chunk, and one day at a time: the same two failures
        with pytest.raises(QualityCheckFailed) as failure:
            run("bronze", tmp_path, chunk_days)
        message = str(failure.value)
        assert "failed: 2 critical expectation(s)" in message
        checked[chunk_days] = quality_section(copy, BAD_DAY, "bronze")["tables"]["bronze.events"]
    assert (checked[14]["chunks"], checked[1]["chunks"]) == (1, 3)
    assert checked[1]["expectations"] == 3 * checked[14]["expectations"]
    assert checked[1]["passed"] == checked[1]["expectations"] - 2
    assert "bronze.events: expect_column_values_to_be_unique(column='event_id'): 2 of" in message
    assert "expect_column_values_to_be_between(column='level', min_value=1.0, max_value=4.0): 1 of" in message
    assert (
        f"ds='{BAD_DAY}', source_file='t_alibaba_data.csv', source_line={int(events.loc[5, 'source_line'])}" in message
    )
