"""Nightly training on another source: the real H&M purchases (one level: a purchase) with article attributes in the
item tower, and the refit on every day before export. Checks what differs from the Tmall tests: a single ordinal
boundary, categorical attributes that reach the model, its manifest and items the model never saw, served
embeddings that know the last days' users and items while the gate re-scores the held-out model, and the ranked
lists of a source with one level."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from nightrec.adapters import load_adapter
from nightrec.warehouse import Warehouse
from tests.conftest import SMOKE_RANKER, SMOKE_TRAINING, make_settings
from training import data, registry, run

pytestmark = pytest.mark.spark

LAST_DAY = date(2020, 9, 22)  # H&M's last day: evaluation 2020-08-24.., validation 2020-07-27.., training before
TRAIN_END, EVAL_START = date(2020, 7, 27), date(2020, 8, 24)


@pytest.fixture(scope="module")
def hm(tmp_path_factory, spark):
    """The whole H&M sample (two years, 31,662 purchases) landed, through sequences, marts and `feast apply`."""
    from nightrec import feature_store
    from nightrec.attributes import ingest_attributes
    from nightrec.dbt_runner import run_dbt
    from nightrec.landing import replay
    from nightrec.marts_publish import export_marts
    from spark_jobs import build_sequences, ingest_events

    settings = make_settings(tmp_path_factory.mktemp("hm") / "warehouse", source="hm")
    adapter = load_adapter("hm")
    start, end = adapter.history_start, adapter.history_end + timedelta(days=1)
    warehouse = Warehouse(settings.warehouse_root, adapter.name)
    replay(adapter, warehouse, start, end)
    ingest_attributes(adapter, warehouse)
    ingest_events.run(spark, settings, start, end)
    build_sequences.run(spark, settings, start, end)
    run_dbt(settings, ["build", "--exclude-resource-type", "unit_test"], target="duckdb")
    export_marts(settings)
    feature_store.apply(settings)
    smoke = settings.with_overrides(
        training=replace(settings.training, **{**SMOKE_TRAINING, "refit": True}),
        ranker=replace(settings.ranker, **SMOKE_RANKER),
    )
    return smoke, run.run(smoke, LAST_DAY)


@pytest.fixture(scope="module")
def raw() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The delivered files, read independently of the pipeline."""
    adapter = load_adapter("hm")
    purchases = pd.read_csv(adapter.bundled_events, dtype=str)
    purchases["day"] = pd.to_datetime(purchases["t_dat"]).dt.date
    articles = pd.read_csv(adapter.item_attributes.path, dtype=str).set_index("article_id")
    return purchases, articles


def test_a_single_level_source_trains_every_model_with_one_boundary(hm, raw):
    settings, report = hm
    purchases, _ = raw
    buyers = purchases[purchases["day"] >= EVAL_START]["customer_id"].nunique()
    train_items = purchases[purchases["day"] < TRAIN_END]["article_id"].nunique()
    assert report["split"]["evaluation"] == [str(EVAL_START), str(LAST_DAY + timedelta(days=1))]
    for kind in ("two_tower", "gnolr", "esmm"):
        metrics = report["models"][kind]["metrics"]
        assert metrics["eval_users"] == buyers
        # one level: real exposures cannot be ordered among themselves, only against sampled untouched items
        assert not any(k.startswith(("auc_c", "gauc")) for k in metrics)
        if kind != "two_tower":  # the retrieval model is judged on retrieval only
            assert 0 <= metrics["auc_sampled_c0"] <= 1 and metrics["auc_mean"] == metrics["auc_sampled_c0"]
        directory = registry.model_dir(settings.warehouse_root, kind, str(LAST_DAY))
        manifest = json.loads((directory / "manifest.json").read_text())
        assert len(manifest["base_rates"]) == 1
        evaluated = torch.load(directory / "evaluated.pt", map_location="cpu", weights_only=False)
        assert len(evaluated["items"]) == train_items  # the held-out model knows the training days only


def test_article_attributes_reach_the_item_tower_and_its_manifest(hm, raw):
    """One embedding table per attribute, sized by the values of the items each model trained on (+1: unknown)."""
    settings, _ = hm
    purchases, articles = raw

    def cardinalities(bought: pd.DataFrame) -> list[int]:
        described = articles.loc[articles.index.intersection(sorted(set(bought["article_id"])))]
        return [described[c].nunique() + 1 for c in ("product_group_name", "product_type_name", "colour_group_name")]

    held_out, every_day = cardinalities(purchases[purchases["day"] < TRAIN_END]), cardinalities(purchases)
    assert min(held_out) > 2  # the sample describes enough bought articles for the check to mean something
    directory = registry.model_dir(settings.warehouse_root, "gnolr", str(LAST_DAY))
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["architecture"]["item_attribute_values"] == every_day  # the served refit
    for file, expected in (("evaluated.pt", held_out), ("weights.pt", every_day)):
        weights = torch.load(directory / file, map_location="cpu", weights_only=False)
        assert weights["architecture"]["item_attribute_values"] == expected
        assert [len(weights["item_attributes"][a]) + 1 for a in data.ITEM_ATTRIBUTES] == expected
        tables = [weights["state_dict"][f"item.attributes.{n}.weight"] for n in range(3)]
        assert [t.shape[0] for t in tables] == expected


def test_items_the_model_never_saw_are_placed_by_their_attributes(hm, raw, tmp_path):
    """Articles first bought after the training days are id 0 for the model: their embeddings differ from what the
    model gives without attributes exactly when the article file describes them."""
    settings, _ = hm
    purchases, articles = raw
    model_dir = registry.model_dir(settings.warehouse_root, "two_tower", str(LAST_DAY))
    manifest = json.loads((model_dir / "manifest.json").read_text())
    weights = torch.load(model_dir / "evaluated.pt", map_location="cpu", weights_only=False)  # trained before TRAIN_END
    model = run.build_model(weights["architecture"])
    model.load_state_dict(weights["state_dict"])
    items = data.Vocabulary(tuple(weights["items"]))
    attributes = data.ItemAttributes.load(settings, items, weights["item_attributes"])
    new = sorted(set(purchases[purchases["day"] >= TRAIN_END]["article_id"]) - set(items.ids))
    described = [i for i in new if i in articles.index and any(attributes.index(pd.Series([i]))[0])]
    undescribed = [i for i in new if i not in articles.index]
    assert len(described) >= 5 and len(undescribed) >= 5
    ids = described[:5] + undescribed[:5]
    columns = (manifest["feature_columns"]["user"], manifest["feature_columns"]["item"])
    at, cpu = LAST_DAY + timedelta(days=1), torch.device("cpu")

    def vectors(attrs: data.ItemAttributes, work: str) -> np.ndarray:
        vocabularies = data.Vocabularies(data.Vocabulary(()), items, attrs)
        return run.embed(model, vocabularies, columns, settings, "item", ids, at, tmp_path / work, cpu)

    with_attributes = vectors(attributes, "with")
    without = vectors(data.ItemAttributes(attributes.values, {}), "without")
    moved = ~np.isclose(with_attributes, without, atol=1e-6).all(axis=1)
    assert moved.tolist() == [True] * 5 + [False] * 5


def test_served_embeddings_come_from_a_refit_on_every_day(hm, raw):
    """The exported embeddings know every user and item through the last day (the held-out model misses the last
    44 days' newcomers); the refit ran as many epochs as early stopping chose."""
    settings, _ = hm
    purchases, _ = raw
    for kind in ("two_tower", "gnolr", "esmm"):
        directory = registry.model_dir(settings.warehouse_root, kind, str(LAST_DAY))
        manifest = json.loads((directory / "manifest.json").read_text())
        metrics = json.loads((directory / "metrics.json").read_text())
        served = manifest["served_model"]
        assert served["refit"] and served["trained_on"] == ["2018-09-20", str(LAST_DAY + timedelta(days=1))]
        assert served["epochs"] == metrics["fit"]["best_epoch"] == 1
        users = pq.read_table(directory / "user_embeddings.parquet").column("user_id").to_pylist()
        items = pq.read_table(directory / "item_embeddings.parquet").column("item_id").to_pylist()
        assert sorted(users) == sorted(purchases["customer_id"].unique())
        assert sorted(items) == sorted(purchases["article_id"].unique())
        assert served["users"] == len(users) and served["items"] == len(items)
        weights = torch.load(directory / "weights.pt", map_location="cpu", weights_only=False)
        assert list(weights["items"]) == sorted(items) and weights["architecture"] == manifest["architecture"]


def test_the_gate_rescores_the_held_out_model_not_the_refit(hm, tmp_path):
    """The refit has seen the evaluation days: re-scoring it would flatter the champion. Re-scored on the same
    window, the champion gives exactly the figure its run reported for the held-out model."""
    settings, report = hm
    prepared = run.prepare(settings, LAST_DAY, seed=0, work_dir=tmp_path)
    for kind in ("gnolr", "two_tower"):
        rescored, why = run.rescore_champion(kind, prepared, settings, torch.device("cpu"))
        assert why == f"champion {LAST_DAY} re-scored on this window"
        metric = run.gate_metric(kind)
        assert rescored[metric] == pytest.approx(report["models"][kind]["metrics"][metric], abs=1e-9)
        assert rescored["ndcg@20"] == pytest.approx(report["models"][kind]["metrics"]["ndcg@20"], abs=1e-9)


def test_a_single_level_source_builds_candidates_and_ranks_them(hm, raw, spark):
    """One level: no open intent or conversion features, a purchase label, and the same decision rule."""
    from nightrec import ranking
    from nightrec.anchors import plan_for
    from spark_jobs import build_candidates
    from training import ranker

    settings, _ = hm
    purchases, _ = raw
    plan = plan_for(settings, load_adapter("hm").history_start, LAST_DAY)
    built = build_candidates.run(spark, settings, plan, str(LAST_DAY))
    assert built["anchors"][str(plan.serve)]["users"] == purchases["customer_id"].nunique()
    table = pq.read_table(Warehouse(settings.warehouse_root, "hm").candidates(LAST_DAY) / f"anchor={plan.serve}")
    assert [c for c in table.column_names if c not in ("user_id", "item_id", "sources")] == ranking.feature_names(
        1, settings.ranker.sources
    )
    report = ranker.run(settings, LAST_DAY, plan=plan)
    buyers = purchases[purchases["day"] >= EVAL_START]["customer_id"].nunique()
    assert all(row["30d"]["users"] == buyers for row in report["metrics"].values())
    best = max(ranking.BASELINES, key=lambda n: report["metrics"][n]["30d"]["ndcg@20"])
    assert report["lists"]["baseline"] == best and report["lists"]["lists"] in ("ranker", best)


def test_the_analysts_example_queries_run_on_a_one_level_source(hm, capsys):
    """docs/analyst_queries.sql is written against levels, not Tmall's four: on H&M (one level, a purchase) every query
    over the marts and bronze answers; the ones over lists and segments, not published in this warehouse, fail one
    by one with DuckDB's message, and the command ends with an error naming them and what publishes them."""
    from nightrec.config import PROJECT_ROOT
    from nightrec.marts_publish import build_analyst_db
    from nightrec_app.cli import main

    settings, _ = hm
    build_analyst_db(settings)
    capsys.readouterr()
    rc = main(
        [
            "sql",
            "--file",
            str(PROJECT_ROOT / "docs" / "analyst_queries.sql"),
            "--source",
            "hm",
            "--warehouse",
            str(settings.warehouse_root),
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 2
    assert [line.split(":")[0] for line in err.splitlines() if line.startswith("query ")] == [
        "query 7 failed",
        "query 8 failed",
        "query 9 failed",
        "query 10 failed",
    ]
    assert "4 of 10 queries failed (7, 8, 9, 10)" in err and "publish_topk" in err
    assert "top_level_events_30d" in out and "per_level_1_event" in out and "last_below_top" in out


def test_the_nightly_consumer_encoder_reads_the_articles_and_customers_attributes(hm, raw):
    """H&M describes articles (group, type, colour) and customers (age, club status): the night's encoder takes them as
    inputs, values read from the delivered files, and keeps its vocabularies with its weights for the next night."""
    from training import consumer_embeddings

    settings, _ = hm
    purchases, articles = raw
    customers = pd.read_csv(load_adapter("hm").user_attributes.path, dtype=str).set_index("customer_id")
    result = consumer_embeddings.run(settings, LAST_DAY)
    buyers = purchases["customer_id"].unique()
    assert result["consumers"] == len(buyers)
    weights = torch.load(
        Warehouse.of(settings).model_dir("consumer_encoder", LAST_DAY.isoformat()) / "weights.pt", weights_only=False
    )
    values = weights["attribute_values"]
    assert result["attribute_values"] == {name: len(v) for name, v in values.items()}
    # the product groups of the bought articles the file describes; every token of a customer with at most 50
    # purchases is in their sequence, so those customers' groups are all there
    described = purchases[purchases["article_id"].isin(articles.index)]
    groups = set(articles.loc[described["article_id"].unique(), "product_group_name"].dropna())
    short = described.groupby("customer_id").filter(lambda g: len(purchases[purchases.customer_id == g.name]) <= 50)
    assert set(articles.loc[short["article_id"].unique(), "product_group_name"].dropna()) <= set(values["category"])
    assert set(values["category"]) <= groups and len(values["category"]) > 1
    assert values["membership"] == sorted(set(customers.loc[buyers, "club_member_status"].dropna()))
    ages = pd.to_numeric(customers.loc[buyers, "age"]).dropna()
    assert len(values["age_band"]) == len(set(np.searchsorted([25, 35, 45, 55, 65], ages, side="right")))
    table = pq.read_table(Warehouse.of(settings).consumer_embeddings(LAST_DAY)).to_pandas()
    vectors = np.stack(table["embedding"].to_numpy())
    assert len(table) == len(buyers) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
