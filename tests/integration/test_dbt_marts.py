"""dbt on both targets over the real Tmall data: marts reconcile with bronze, and the two targets agree row for row.
The spark target runs on a Spark standalone cluster (the ``cluster`` profile's way), the duckdb one in process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from datetime import date

import duckdb
import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest

from nightrec.config import PROJECT_ROOT
from nightrec.dbt_runner import ensure_manifest, run_dbt
from nightrec.warehouse import Warehouse
from tests.conftest import read_table

pytestmark = pytest.mark.spark

MARTS = {
    "fct_interactions": ["user_id", "item_id", "ds"],
    "training_examples": ["user_id", "item_id", "ds"],
    "dim_users": ["user_id"],
    "dim_items": ["item_id"],
    "user_features": ["user_id", "ds"],
    "item_features": ["item_id", "ds"],
    "user_sequences": ["user_id", "ds"],
}


def _dates(df: pd.DataFrame) -> pd.DataFrame:
    """Day columns (ds, first_event_ds ...) as datetime.date, whatever the engine handed to pandas."""
    for col in [c for c in df.columns if c == "ds" or c.endswith("_ds")]:
        df[col] = pd.to_datetime(df[col].astype(str)).dt.date
    return df


@pytest.fixture(scope="module")
def duckdb_marts(tmall_warehouse) -> dict[str, pd.DataFrame]:
    run_dbt(tmall_warehouse, ["build"], target="duckdb")
    path = Warehouse.of(tmall_warehouse).duckdb_target_db()
    with duckdb.connect(str(path)) as con:  # same config as dbt-duckdb's open connection in this process
        return {name: _dates(con.sql(f"select * from main.{name}").df()) for name in MARTS}


@pytest.fixture(scope="module")
def spark_marts(tmall_warehouse, spark_standalone) -> dict[str, pd.DataFrame]:
    # dbt-spark needs its own session (Hive metastore pinned under the warehouse), so it runs in its own process;
    # its master is the profile's spark.master (dbt/profiles.yml reads NIGHTREC_SPARK_MASTER): here a standalone
    # cluster, so the executors that read bronze and write the tables are the worker's.
    before = {app["id"] for app in spark_standalone.applications()}
    env = {**os.environ, **tmall_warehouse.environment(), "NIGHTREC_SPARK_MASTER": spark_standalone.master}
    proc = subprocess.run(
        [sys.executable, "-m", "nightrec_app.cli", "dbt", "--target", "spark", "build"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    ran = [app for app in spark_standalone.applications() if app["id"] not in before]
    assert len(ran) == 1 and ran[0]["state"] == "FINISHED" and ran[0]["cores"] >= 1, ran  # dbt's session, on the worker
    root = Warehouse.of(tmall_warehouse).marts("spark") / "tables" / "nightrec.db"  # dbt/profiles.yml's schema
    out = {}
    for name in MARTS:
        table = pads.dataset(root / name, format="parquet", partitioning="hive").to_table().to_pandas()
        out[name] = _dates(table)
    return out


@pytest.fixture(scope="module")
def bronze(tmall_warehouse, tmall) -> pd.DataFrame:
    return read_table(Warehouse(tmall_warehouse.warehouse_root, tmall.name).bronze_events())


def test_the_docs_lineage_starts_at_the_zones_the_warehouse_names(tmall_warehouse, duckdb_marts):
    """The models that read the zones do it through dbt sources (so the docs' lineage starts at them), and each
    source's path is the zone's path in the warehouse layout."""
    manifest = json.loads(ensure_manifest().read_text())
    wh = Warehouse.of(tmall_warehouse)
    zones = {
        "stg_bronze__events": [("bronze.events", wh.bronze_events())],
        "stg_bronze__quarantine": [("bronze.quarantine", wh.bronze_quarantine())],
        "stg_bronze__item_attributes": [("bronze.item_attributes", wh.bronze_item_attributes())],
        "stg_bronze__user_attributes": [("bronze.user_attributes", wh.bronze_user_attributes())],
        "user_sequences": [("silver.sequences", wh.silver_sequences())],
        "topk_current": [("serving.topk_current", wh.serving_topk() / "current")],
        "segment_membership": [
            ("segments.membership", wh.segments("membership")),
            ("segments.profiles", wh.segments("profiles")),
        ],
        "segment_profiles": [("segments.profiles", wh.segments("profiles"))],
        "lookalike_audiences": [("segments.audiences", wh.segments("audiences"))],
    }
    for model, sources in zones.items():
        node = manifest["nodes"][f"model.nightrec.{model}"]
        read = sorted(n for n in node["depends_on"]["nodes"] if n.startswith("source."))
        assert read == sorted(f"source.nightrec.{source}" for source, _ in sources), model
        for source, path in sources:
            assert wh.root / manifest["sources"][f"source.nightrec.{source}"]["meta"]["path"] == path
    assert len(manifest["sources"]) == len({source for sources in zones.values() for source, _ in sources})
    assert wh.bronze_events().is_dir() and wh.silver_sequences().is_dir()  # what the build above read


def test_marts_reconcile_with_bronze(duckdb_marts, bronze):
    fct = duckdb_marts["fct_interactions"]
    assert fct["n_events"].sum() == len(bronze) == 182_880
    for lv in range(1, 5):
        assert fct[f"n_level_{lv}"].sum() == (bronze["level"] == lv).sum()
    per_exposure = bronze.groupby(["user_id", "item_id", "ds"])["level"].max()
    assert len(fct) == len(per_exposure)
    labels = duckdb_marts["training_examples"].set_index(["user_id", "item_id", "ds"])["label"]
    assert labels.sort_index().tolist() == per_exposure.sort_index().tolist()
    assert len(duckdb_marts["dim_users"]) == bronze["user_id"].nunique() == 884
    assert len(duckdb_marts["dim_items"]) == bronze["item_id"].nunique() == 9_531
    assert duckdb_marts["dim_users"]["n_events"].sum() == len(bronze)


def test_training_examples_sit_at_day_start_and_features_at_day_end(duckdb_marts):
    ex = duckdb_marts["training_examples"]
    assert (pd.to_datetime(ex["example_ts"]).dt.date == ex["ds"]).all()
    for name in ("user_features", "item_features"):
        feats = duckdb_marts[name]
        assert (pd.to_datetime(feats["feature_ts"]).dt.date == feats["ds"] + pd.Timedelta(days=1)).all()


def test_user_features_match_a_plain_computation(duckdb_marts, bronze):
    day = date(2014, 6, 4)
    feats = duckdb_marts["user_features"]
    feats = feats[feats["ds"] == day].set_index("user_id")
    ages = (pd.Timestamp(day) - pd.to_datetime(bronze["ds"])).dt.days
    window = bronze[(ages >= 0) & (ages < 90)].assign(age=ages)
    assert set(feats.index) == set(window["user_id"])
    for user, h in list(window.groupby("user_id"))[:40]:
        row = feats.loc[user]
        assert row["recency_days"] == h["age"].min()
        for w in (7, 30, 90):
            hw = h[h["age"] < w]
            assert row[f"n_events_{w}d"] == len(hw)
            assert row[f"active_days_{w}d"] == hw["ds"].nunique()
            for lv in range(1, 5):
                assert row[f"n_level_{lv}_{w}d"] == (hw["level"] == lv).sum()
        counts = h.groupby("item_id").size()
        assert row["top_item_90d"] == min(counts[counts == counts.max()].index)


def test_the_duckdb_target_runs_under_the_configured_memory_limit(tmall_warehouse, duckdb_marts):
    """DuckDB's own default is 80% of the machine; the target takes `duckdb_memory_limit` (decision 40)."""

    def limit(settings) -> str:
        shown = run_dbt(settings, ["show", "--inline", "select current_setting('memory_limit') as m"], target="duckdb")
        return shown.result.results[0].agate_table.rows[0][0]

    assert limit(tmall_warehouse.with_overrides(duckdb_memory_limit="1.5GB")) == "1.3 GiB"  # 1.5e9 bytes
    assert tmall_warehouse.duckdb_memory_limit == "6GB" and limit(tmall_warehouse) == "5.5 GiB"  # the profile's


def test_item_features_match_a_plain_computation(duckdb_marts, bronze):
    """Every column of every item on one day, against pandas over the (user, item, day) rows: the model counts its
    windows as running sums of changes (decision 38), this counts the rows inside each window directly."""
    day, top = pd.Timestamp(2014, 7, 20), 4
    feats = duckdb_marts["item_features"]
    feats = feats[feats["ds"] == day.date()].set_index("item_id").sort_index()
    days = bronze.assign(ds=pd.to_datetime(bronze["ds"])).groupby(["user_id", "item_id", "ds"], as_index=False)
    days = days.agg(n_events=("level", "size"), max_level=("level", "max"))
    days["age"] = (day - days["ds"]).dt.days
    bought = days[days["max_level"] == top].sort_values("ds")
    bought = bought.assign(gap=bought.groupby(["user_id", "item_id"])["ds"].diff().dt.days)
    days, bought = days[days["age"].between(0, 89)], bought[bought["age"].between(0, 364)]
    assert sorted(feats.index) == sorted(days["item_id"].unique()) and len(feats) > 1_000

    def per_item(rows: pd.DataFrame, how: str, column: str = "user_id") -> pd.Series:
        return rows.groupby("item_id")[column].agg(how).reindex(feats.index, fill_value=0)

    for w in (7, 30, 90):
        inside = days[days["age"] < w]
        assert (feats[f"n_events_{w}d"] == per_item(inside, "sum", "n_events")).all(), w
        assert (feats[f"n_users_{w}d"] == per_item(inside, "nunique")).all(), w
        assert (feats[f"n_buyers_{w}d"] == per_item(inside[inside["max_level"] == top], "nunique")).all(), w
    month = days[days["age"] < 30]
    for lv in range(1, top + 1):
        reached = per_item(month[month["max_level"] >= lv], "nunique")
        assert (feats[f"n_users_reaching_level_{lv}_30d"] == reached).all(), lv
    purchase_days = bought.groupby(["item_id", "user_id"]).size()
    assert (feats["n_buyers_365d"] == purchase_days.groupby("item_id").size().reindex(feats.index, fill_value=0)).all()
    rate = (purchase_days >= 2).groupby("item_id").mean().reindex(feats.index)
    assert np.allclose(feats["repurchase_rate_365d"], rate, equal_nan=True)
    median = bought.dropna(subset=["gap"]).groupby("item_id")["gap"].median().reindex(feats.index)
    assert np.allclose(feats["median_days_between_purchases_365d"], median, equal_nan=True)
    assert feats["median_days_between_purchases_365d"].notna().sum() > 10  # the day has rebuys to check


def _canonical(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    df = df[sorted(df.columns)].sort_values(keys).reset_index(drop=True)
    for col in df.columns:
        first = df[col].dropna().iloc[0] if df[col].notna().any() else None
        if isinstance(first, list | np.ndarray):  # list columns: the same values whatever container the engine uses
            df[col] = df[col].map(lambda v: tuple(pd.Series(v).astype(str)) if v is not None else None)
        elif pd.api.types.is_datetime64_any_dtype(df[col]):
            df[col] = pd.to_datetime(df[col], utc=True).dt.tz_localize(None)
        elif pd.api.types.is_float_dtype(df[col]):
            df[col] = df[col].round(9)
        elif pd.api.types.is_integer_dtype(df[col]):
            df[col] = df[col].astype("Int64")  # nullable: attribute columns (age) are null for Tmall
    return df


@pytest.mark.parametrize("name", list(MARTS))
def test_both_targets_build_the_same_rows(duckdb_marts, spark_marts, name):
    a, b = _canonical(duckdb_marts[name], MARTS[name]), _canonical(spark_marts[name], MARTS[name])
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b) > 0
    for col in a.columns:
        left, right = a[col].to_numpy(), b[col].to_numpy()
        if a[col].dtype.kind == "f":
            assert np.allclose(left.astype(float), right.astype(float), equal_nan=True), (name, col)
        else:  # nulls compare equal whatever the engine calls them (<NA>, NaN, None)
            left_text = a[col].astype(object).where(a[col].notna(), None).astype(str)
            right_text = b[col].astype(object).where(b[col].notna(), None).astype(str)
            assert (left_text == right_text).all(), (name, col)


def test_incremental_rebuild_of_days_is_idempotent(tmall_warehouse, duckdb_marts):
    run_dbt(
        tmall_warehouse, ["build", "--select", "marts"], target="duckdb", start=date(2014, 8, 13), end=date(2014, 8, 16)
    )
    path = Warehouse.of(tmall_warehouse).duckdb_target_db()
    with duckdb.connect(str(path)) as con:  # same config as dbt-duckdb's open connection in this process
        for name, keys in MARTS.items():
            again = _dates(con.sql(f"select * from main.{name}").df())
            pd.testing.assert_frame_equal(_canonical(again, keys), _canonical(duckdb_marts[name], keys))


RUN_DAYS = [date(2014, 8, 13), date(2014, 8, 14), date(2014, 8, 15)]


def _check_marts(settings, tmall, chunk_days: int = 14):
    """The marts' checks of RUN_DAYS as the DAG's task makes them, ``chunk_days`` days at a time."""
    from nightrec.quality.gx_run import QualityReport, validate
    from nightrec.quality.suites import suites_in_chunks

    settings = settings.with_overrides(quality=replace(settings.quality, check_chunk_days=chunk_days))
    wh = Warehouse(settings.warehouse_root, tmall.name)
    report = QualityReport("marts", "manual__test", wh.data_docs())
    for days, suites in suites_in_chunks("marts", settings, tmall, wh, RUN_DAYS):
        report.add(validate(settings.warehouse_root, "marts", f"manual__test__{days[0]:%Y%m%d}", suites))
    return report


def test_both_targets_pass_the_marts_quality_checks(tmall_warehouse, duckdb_marts, spark_marts, tmall):
    reports = {
        target: _check_marts(tmall_warehouse.with_overrides(dbt_target=target), tmall) for target in ("duckdb", "spark")
    }
    for target, report in reports.items():
        assert report.success, (target, report.failure_message())
        assert all(t["passed"] == t["expectations"] for t in report.tables.values()), target
    fct = duckdb_marts["fct_interactions"]
    assert reports["duckdb"].tables["marts.fct_interactions"]["rows"] == fct["ds"].isin(RUN_DAYS).sum()
    assert reports["duckdb"].tables == reports["spark"].tables
    assert reports["duckdb"].tables["marts.dim_users"]["rows"] == 884
    # a day at a time (as a long bootstrap checks 14 days at a time): the daily marts in three chunks whose rows add
    # up to the same, the dimensions once; every check passes again (each reconciles with its own days of bronze)
    daily = _check_marts(tmall_warehouse, tmall, chunk_days=1)
    assert daily.success and {t: v["chunks"] for t, v in daily.tables.items()} == {
        t: 1 if t.startswith("marts.dim_") else 3 for t in reports["duckdb"].tables
    }
    for table, counts in reports["duckdb"].tables.items():
        assert daily.tables[table]["rows"] == counts["rows"], table
        assert daily.tables[table]["passed"] == daily.tables[table]["expectations"], table


def test_marts_checks_catch_a_lost_interaction_and_a_rate_above_one(tmall_warehouse, duckdb_marts, tmall, tmp_path):
    """A copy of the duckdb marts (bronze shared) with one interaction deleted and one rate set to 1.5."""
    copy_root = tmp_path / "warehouse"
    (copy_root / "marts" / "duckdb").mkdir(parents=True)
    (copy_root / "bronze").symlink_to(tmall_warehouse.warehouse_root / "bronze")
    db = copy_root / "marts" / "duckdb" / "nightrec.duckdb"
    source_db = tmall_warehouse.warehouse_root / "marts" / "duckdb" / "nightrec.duckdb"
    with duckdb.connect(str(source_db)) as con:
        con.execute("checkpoint")  # dbt's open connection may still hold the last writes in the WAL
    db.write_bytes(source_db.read_bytes())
    with duckdb.connect(str(db)) as con:
        lost = con.execute(
            "select user_id, item_id, n_events from main.fct_interactions where ds = date '2014-08-15' "
            "order by user_id, item_id limit 1"
        ).fetchone()
        con.execute(
            "delete from main.fct_interactions where ds = date '2014-08-15' and user_id = ? and item_id = ?",
            [lost[0], lost[1]],
        )
        con.execute(
            "update main.user_features set rate_level_1_7d = 1.5 where ds = date '2014-08-14' and user_id = "
            "(select min(user_id) from main.user_features where ds = date '2014-08-14')"
        )
    report = _check_marts(tmall_warehouse.with_overrides(warehouse_root=copy_root), tmall)
    assert not report.success
    found = {(f.table, f.expectation.split(": ", 1)[-1].split("(")[0], f.expectation) for f in report.critical}
    tables = sorted({t for t, _, _ in found})
    # the lost interaction also leaves its pair state without a row to match
    assert tables == [
        "marts.fct_interactions",
        "marts.training_examples",
        "marts.user_features",
        "marts.user_item_features",
    ]
    message = report.failure_message()
    expected_sum = int(duckdb_marts["fct_interactions"].query("ds in @RUN_DAYS")["n_events"].sum())
    assert "reconciles with bronze: expect_column_sum_to_be_between(column='n_events'" in message
    assert f"observed {expected_sum - lost[2]:,}" in message
    assert "one example per fct_interactions row: expect_table_row_count_to_equal" in message
    assert "expect_column_values_to_be_between(column='rate_level_1_7d'" in message
    assert "ds=" in message and "user_id=" in message  # the offending user_features row is quoted
