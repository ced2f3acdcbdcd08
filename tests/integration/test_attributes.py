"""Item and user attribute snapshots from the real H&M and MovieLens files, and the empty Tmall ones."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from nightrec.adapters import load_adapter
from nightrec.attributes import ingest_attributes
from nightrec.landing import replay
from nightrec.warehouse import Warehouse


def _landed(tmp_path: Path, source: str) -> tuple[Warehouse, object]:
    adapter = load_adapter(source)
    wh = Warehouse(tmp_path, source)
    replay(adapter, wh, adapter.history_end, adapter.history_end)  # landing a day also lands the attribute files
    return wh, adapter


def test_hm_articles_and_customers_map_onto_the_canonical_attributes(tmp_path):
    wh, adapter = _landed(tmp_path, "hm")
    counts = ingest_attributes(adapter, wh)
    articles = pd.read_csv(adapter.item_attributes.path, dtype=str, keep_default_na=False)
    customers = pd.read_csv(adapter.user_attributes.path, dtype=str, keep_default_na=False)
    assert counts["items"] == {"rows": len(articles), "kept": len(articles), "rejected": 0}
    assert counts["users"] == {"rows": len(customers), "kept": len(customers), "rejected": 0}
    items = pd.read_parquet(wh.bronze_item_attributes()).set_index("item_id")
    first = articles.iloc[0]
    assert first["article_id"].startswith("0")  # the leading zero of H&M ids survives
    row = items.loc[first["article_id"]]
    assert (row["item_name"], row["category"], row["subcategory"], row["colour"]) == (
        first["prod_name"],
        first["product_group_name"],
        first["product_type_name"],
        first["colour_group_name"],
    )
    assert items["tags"].isna().all()  # not mapped for H&M
    users = pd.read_parquet(wh.bronze_user_attributes()).set_index("user_id")
    ages = pd.to_numeric(customers.set_index("customer_id")["age"], errors="coerce")
    assert users["age"].astype("float").equals(ages.loc[users.index].round())
    assert set(users["membership"].dropna()) <= set(customers["club_member_status"])


def test_movielens_keeps_the_first_genre_as_category_and_all_as_tags(tmp_path):
    wh, adapter = _landed(tmp_path, "movielens")
    ingest_attributes(adapter, wh)
    movies = pd.read_csv(adapter.item_attributes.path, dtype=str).set_index("movieId")
    items = pd.read_parquet(wh.bronze_item_attributes()).set_index("item_id")
    assert len(items) == len(movies) == 9_742
    assert (items["tags"] == movies.loc[items.index, "genres"]).all()
    assert (items["category"] == movies.loc[items.index, "genres"].str.split("|").str[0]).all()
    assert items.loc["1", "item_name"] == "Toy Story (1995)" and items.loc["1", "category"] == "Adventure"
    assert len(pd.read_parquet(wh.bronze_user_attributes())) == 0  # MovieLens has no user file


def test_tmall_gets_empty_tables_with_the_same_columns(tmp_path):
    wh, adapter = _landed(tmp_path, "tmall_brand")
    assert ingest_attributes(adapter, wh)["items"] == {"rows": 0, "kept": 0, "rejected": 0}
    items = pd.read_parquet(wh.bronze_item_attributes())
    assert list(items.columns) == ["item_id", "item_name", "category", "subcategory", "colour", "tags", "available"]
    assert len(items) == 0


def test_rows_without_a_key_or_repeating_one_are_quarantined_not_dropped(tmp_path):
    wh, adapter = _landed(tmp_path, "movielens")
    landed = wh.raw_attributes() / adapter.item_attributes.path.name
    lines = landed.read_text().splitlines()
    # a real row repeated (duplicate key) and a real row with its key blanked
    landed.write_text("\n".join([*lines, lines[1], "," + lines[2].split(",", 1)[1]]) + "\n")
    counts = ingest_attributes(adapter, wh)
    assert counts["items"] == {"rows": len(lines) + 1, "kept": len(lines) - 1, "rejected": 2}
    quarantine = pd.read_parquet(wh.bronze_attribute_quarantine())
    assert sorted(zip(quarantine["reason"], quarantine["source_record"], strict=True)) == [
        ("duplicate_key", len(lines) + 1),
        ("missing_key", len(lines) + 2),
    ]
    kept = pd.read_parquet(wh.bronze_item_attributes())
    assert kept.loc[kept["item_id"] == "1", "item_name"].tolist() == ["Toy Story (1995)"]  # the first row wins


def test_a_mapped_column_missing_from_the_file_is_a_clear_error(tmp_path):
    from nightrec.errors import InputError

    wh, adapter = _landed(tmp_path, "movielens")
    landed = wh.raw_attributes() / adapter.item_attributes.path.name
    landed.write_text("movieId,title\n1,Toy Story (1995)\n")
    with pytest.raises(InputError, match=r"column\(s\) \['genres'\] that the adapter maps"):
        ingest_attributes(adapter, wh)


@pytest.mark.spark
def test_hm_marts_carry_item_and_user_attributes(tmp_path, spark):
    """A week of real H&M purchases through ingest and dbt: dim_items/dim_users carry the attribute files' values,
    user_features the top category."""
    import duckdb

    from nightrec.dbt_runner import run_dbt
    from spark_jobs import build_sequences, ingest_events
    from tests.conftest import make_settings

    settings = make_settings(tmp_path / "warehouse", source="hm")
    adapter = load_adapter("hm")
    wh = Warehouse(settings.warehouse_root, "hm")
    start = adapter.history_start  # sequences start from the first day of the history
    end = start + timedelta(days=7)
    replay(adapter, wh, start, end)
    ingest_events.run(spark, settings, start, end)
    build_sequences.run(spark, settings, start, end)
    ingest_attributes(adapter, wh)
    run_dbt(settings, ["build", "--exclude-resource-type", "unit_test"], target="duckdb")  # as the DAG runs it
    db = wh.marts("duckdb") / "nightrec.duckdb"
    with duckdb.connect(str(db)) as con:  # same config as dbt-duckdb's connection in this process
        items = con.sql("select * from main.dim_items").df().set_index("item_id")
        users = con.sql("select * from main.dim_users").df().set_index("user_id")
        feats = con.sql(f"select * from main.user_features where ds = date '{end - timedelta(days=1)}'").df()
        bought = con.sql("select user_id, item_id, n_events from main.fct_interactions").df()
    articles = pd.read_csv(adapter.item_attributes.path, dtype=str).set_index("article_id")
    customers = pd.read_csv(adapter.user_attributes.path, dtype=str).set_index("customer_id")
    known = items.index.intersection(articles.index)
    assert len(known) > 0
    assert (items.loc[known, "category"] == articles.loc[known, "product_group_name"]).all()
    assert (items.loc[known, "colour"] == articles.loc[known, "colour_group_name"]).all()
    assert items.drop(known)["category"].isna().all()  # articles outside the sample keep null attributes
    with_file = users.index.intersection(customers.index)
    assert len(with_file) > 0
    expected_age = pd.to_numeric(customers.loc[with_file, "age"]).round()
    assert users.loc[with_file, "age"].astype(float).equals(expected_age.loc[with_file])
    # top category over 90 days, recomputed from the interactions (ties broken alphabetically)
    window = bought.merge(articles["product_group_name"], left_on="item_id", right_index=True)
    per_category = window.groupby(["user_id", "product_group_name"])["n_events"].sum().reset_index()
    per_category = per_category.sort_values(["user_id", "n_events", "product_group_name"], ascending=[1, 0, 1])
    expected = per_category.drop_duplicates("user_id").set_index("user_id")["product_group_name"]
    got = feats.set_index("user_id")["top_category_90d"]
    assert got.dropna().to_dict() == expected.loc[expected.index.isin(got.index)].to_dict()
    assert got.notna().sum() > 0


def test_a_declared_availability_column_becomes_yes_no_and_rejects_other_words(tmp_path):
    """Real MovieLens rows with an availability column added (no bundled source has one)."""
    from dataclasses import replace

    from nightrec.errors import InputError

    wh, adapter = _landed(tmp_path, "movielens")
    attrs = adapter.item_attributes
    declared = replace(
        adapter, has_availability=True, item_attributes=replace(attrs, columns={**attrs.columns, "available": "stock"})
    )
    landed = wh.raw_attributes() / attrs.path.name
    frame = pd.read_csv(landed, dtype=str, keep_default_na=False)
    words = ["yes", "No", "1", "false", ""]
    frame["stock"] = [words[n % len(words)] for n in range(len(frame))]
    frame.to_csv(landed, index=False)
    ingest_attributes(declared, wh)
    kept = pd.read_parquet(wh.bronze_item_attributes()).set_index("item_id")
    expected = {"yes": True, "No": False, "1": True, "false": False, "": None}
    for item_id, word in zip(frame["movieId"].head(10), frame["stock"].head(10), strict=True):
        assert kept.loc[item_id, "available"] == expected[word] or (
            expected[word] is None and pd.isna(kept.loc[item_id, "available"])
        )
    frame.loc[3, "stock"] = "maybe"
    frame.to_csv(landed, index=False)
    with pytest.raises(InputError, match=r"'stock' \(available\) holds values that are not yes/no: \['maybe'\]"):
        ingest_attributes(declared, wh)
