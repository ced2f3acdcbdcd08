"""A source that delivers Parquet instead of CSV: same contract, same quarantine, lines = row numbers."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import nightrec.adapters as adapters
from nightrec.config import SOURCES_DIR
from nightrec.landing import land_file
from nightrec.warehouse import Warehouse
from spark_jobs import ingest_events
from tests.conftest import make_settings, raw_tmall, read_table

pytestmark = pytest.mark.spark


def test_parquet_delivery_is_ingested_with_row_lineage(tmp_path: Path, spark, monkeypatch: pytest.MonkeyPatch):
    raw = raw_tmall()
    doc = yaml.safe_load((SOURCES_DIR / "tmall_brand.yaml").read_text())
    doc["name"] = "tmall_parquet"
    doc["events"].update(format="parquet", file_pattern="*.parquet")
    sources = tmp_path / "sources"
    sources.mkdir()
    (sources / "tmall_parquet.yaml").write_text(yaml.safe_dump(doc))
    monkeypatch.setattr(adapters, "SOURCES_DIR", sources)
    adapter = adapters.load_adapter("tmall_parquet")

    day = date(2014, 6, 4)
    rows = raw[raw["visit_datetime"] == "6-4"].head(50).reset_index(drop=True)
    rows.loc[3, "user_id"] = None  # one defect: must be quarantined, row 4 of the file = "line" 5
    delivery = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), delivery)

    settings = make_settings(tmp_path / "warehouse", source="tmall_parquet")
    wh = Warehouse(settings.warehouse_root, adapter.name)
    land_file(adapter, wh, day, delivery)
    manifest = ingest_events.run(spark, settings, day, day + timedelta(days=1))[day]

    assert (manifest["raw_rows"], manifest["bronze_rows"], manifest["quarantined_rows"]) == (50, 49, 1)
    quarantine = read_table(wh.bronze_quarantine())
    assert quarantine[["source_line", "reason"]].values.tolist() == [[5, "missing_user_id"]]
    assert '"brand_id":"' + rows.loc[3, "brand_id"] + '"' in quarantine["raw_line"].iloc[0]
    bronze = read_table(wh.bronze_events()).sort_values("source_line")
    expected = rows.drop(index=3)
    assert bronze["item_id"].tolist() == expected["brand_id"].tolist()
    assert bronze["source_line"].tolist() == [i + 2 for i in expected.index]
