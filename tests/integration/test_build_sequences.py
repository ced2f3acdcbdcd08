"""spark_jobs/build_sequences on the real Tmall data, checked against an independent pandas computation."""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nightrec.errors import InputError
from nightrec.storage import SUCCESS_FILE
from nightrec.warehouse import Warehouse, partition
from spark_jobs import build_sequences
from tests.conftest import make_settings, read_table

pytestmark = pytest.mark.spark

CHECK_DAYS = [date(2014, 4, 15), date(2014, 6, 4), date(2014, 8, 15)]


def expected_sequences(bronze: pd.DataFrame, ds: date, n: int, max_level: int) -> pd.DataFrame:
    """The definition, written plainly: each user active on ds, their history through ds, last n tokens."""
    hist = bronze[bronze["ds"] <= ds].sort_values(["user_id", "event_ts", "ds", "source_file", "source_line"])
    hist = hist.assign(gap=hist.groupby("user_id")["event_ts"].diff().dt.total_seconds())
    active = set(bronze.loc[bronze["ds"] == ds, "user_id"])
    rows = []
    for user, h in hist[hist["user_id"].isin(active)].groupby("user_id", sort=True):
        tail = h.tail(n)
        rows.append(
            {
                "user_id": user,
                "seq_item_ids": tail["item_id"].tolist(),
                "seq_levels": tail["level"].tolist(),
                "seq_event_ts": tail["event_ts"].tolist(),
                "seq_gap_seconds": [None if np.isnan(g) else int(g) for g in tail["gap"]],
                "seq_length": len(tail),
                "events_on_day": int((h["ds"] == ds).sum()),
                "events_total": len(h),
                "level_counts": [int((h["level"] == lv).sum()) for lv in range(1, max_level + 1)],
                "active_days": h["ds"].nunique(),
                "first_event_ts": h["event_ts"].min(),
                "last_event_ts": h["event_ts"].max(),
                "max_level": int(h["level"].max()),
            }
        )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def bronze(tmall_warehouse, tmall) -> pd.DataFrame:
    return read_table(Warehouse(tmall_warehouse.warehouse_root, tmall.name).bronze_events())


def _utc(value) -> pd.Timestamp:
    # pandas turns timestamps nested in lists into naive datetime64 values; the files store UTC (tz=UTC).
    t = pd.Timestamp(value)
    return t.tz_localize("UTC") if t.tzinfo is None else t


def _normalise(df: pd.DataFrame) -> list[dict]:
    out = []
    for rec in df.sort_values("user_id").to_dict("records"):
        rec = {k: (list(v) if isinstance(v, (list, np.ndarray)) else v) for k, v in rec.items()}
        rec["seq_event_ts"] = [_utc(t) for t in rec["seq_event_ts"]]
        rec["seq_gap_seconds"] = [None if g is None or pd.isna(g) else int(g) for g in rec["seq_gap_seconds"]]
        rec["seq_levels"] = [int(x) for x in rec["seq_levels"]]
        rec["level_counts"] = [int(x) for x in rec["level_counts"]]
        for k in ("first_event_ts", "last_event_ts"):
            rec[k] = _utc(rec[k])
        for k in ("seq_length", "events_on_day", "events_total", "active_days", "max_level"):
            rec[k] = int(rec[k])
        out.append(rec)
    return out


@pytest.mark.parametrize("ds", CHECK_DAYS, ids=str)
def test_sequences_match_the_definition(tmall_warehouse, tmall, bronze, ds: date):
    wh = Warehouse(tmall_warehouse.warehouse_root, tmall.name)
    got = read_table(wh.silver_sequences(), [ds]).drop(columns=["ds", "source"])
    want = expected_sequences(bronze, ds, tmall_warehouse.pipeline.sequence_length, tmall.max_level)
    assert len(got) == len(want) == bronze.loc[bronze["ds"] == ds, "user_id"].nunique()
    assert _normalise(got[want.columns]) == _normalise(want)


def test_sequences_are_sorted_complete_and_bounded(tmall_warehouse, tmall, bronze):
    wh = Warehouse(tmall_warehouse.warehouse_root, tmall.name)
    silver = read_table(wh.silver_sequences())
    n = tmall_warehouse.pipeline.sequence_length
    assert len(silver) == bronze.groupby(["user_id", "ds"]).ngroups  # one row per active user-day
    assert (
        silver["seq_event_ts"]
        .map(lambda ts: bool(np.all(np.diff(np.asarray(ts, dtype="datetime64[us]")) >= np.timedelta64(0))))
        .all()
    )
    assert (silver["seq_length"] == silver["events_total"].clip(upper=n)).all()
    assert silver["seq_item_ids"].map(len).max() == n
    assert (silver["level_counts"].map(sum) == silver["events_total"]).all()
    latest = silver.sort_values("ds").groupby("user_id").tail(1)
    assert latest["events_total"].sum() == len(bronze)  # every event counted in its user's latest state
    manifests = [json.loads((p / SUCCESS_FILE).read_text()) for p in sorted(wh.silver_sequences().glob("ds=*"))]
    assert sum(m["events"] for m in manifests) == len(bronze)


def test_a_nightly_range_continues_the_bootstrap_exactly(tmp_path: Path, spark, tmall_warehouse, tmall):
    """Sequences built day by day from the previous state equal those of the one-pass bootstrap."""
    src = Warehouse(tmall_warehouse.warehouse_root, tmall.name)
    settings = make_settings(tmp_path / "warehouse")
    dst = Warehouse(settings.warehouse_root, tmall.name)
    shutil.copytree(src.bronze_events(), dst.bronze_events())
    split = date(2014, 8, 10)
    for part in src.silver_sequences().glob("ds=*"):
        if date.fromisoformat(part.name[3:]) < split:
            shutil.copytree(part, dst.silver_sequences() / part.name)
    end = tmall.history_end + timedelta(days=1)
    build_sequences.run(spark, settings, split, split + timedelta(days=3))
    build_sequences.run(spark, settings, split + timedelta(days=3), end)
    days = [split + timedelta(days=i) for i in range((end - split).days)]
    for ds in days:
        a = read_table(src.silver_sequences(), [ds])
        b = read_table(dst.silver_sequences(), [ds])
        assert len(a) > 0
        assert _normalise(a) == _normalise(b), ds


def test_a_range_without_the_previous_state_fails_loudly(tmp_path: Path, spark, tmall_warehouse, tmall):
    src = Warehouse(tmall_warehouse.warehouse_root, tmall.name)
    settings = make_settings(tmp_path / "warehouse")
    dst = Warehouse(settings.warehouse_root, tmall.name)
    ds = date(2014, 6, 1)
    shutil.copytree(partition(src.bronze_events(), ds), partition(dst.bronze_events(), ds))
    with pytest.raises(InputError, match=r"silver/sequences has no completed partition for 1 day\(s\): 2014-05-31"):
        build_sequences.run(spark, settings, ds, ds + timedelta(days=1))
    with pytest.raises(InputError, match=r"bronze/events has no completed partition for 1 day\(s\): 2014-06-02"):
        build_sequences.run(spark, settings, ds, ds + timedelta(days=2))
