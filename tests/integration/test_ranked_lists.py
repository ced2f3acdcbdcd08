"""The published lists on the real Tmall marts (smoke models and ranker): the candidates of every anchor, their
features as of the anchor, the baselines they reproduce, the ranker's leak-free training and judgement, the night's
decision and the lists score_topk publishes from it."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import date, timedelta

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from nightrec import ranking
from nightrec.adapters import load_adapter
from nightrec.anchors import plan_for
from nightrec.warehouse import Warehouse
from spark_jobs import build_candidates, score_topk
from tests import reference_baselines as rb
from tests.conftest import TRAINED_DAY
from training import ranker

pytestmark = pytest.mark.spark

K = 20
T = date(2014, 7, 17)  # TRAINED_DAY + 1 - eval_days


@pytest.fixture(scope="module")
def settings(smoke_training, trained_tmall, tmp_path_factory):
    """A copy of the marts warehouse with the models exactly as the training run wrote them."""
    root = tmp_path_factory.mktemp("ranked") / "warehouse"
    shutil.copytree(smoke_training.warehouse_root, root, symlinks=True, ignore=shutil.ignore_patterns("models"))
    shutil.copytree(trained_tmall[1], root / "models")
    base = smoke_training.with_overrides(warehouse_root=root)
    return base.with_overrides(topk=replace(base.topk, k=K, model="ranker"))


@pytest.fixture(scope="module")
def plan(settings):
    return plan_for(settings, load_adapter("tmall_brand").history_start, TRAINED_DAY)


@pytest.fixture(scope="module")
def night(spark, settings, plan):
    """The night's candidates (Spark), its ranker (trained, judged, gated, the decision) and its published lists."""
    built = build_candidates.run(spark, settings, plan, TRAINED_DAY.isoformat())
    report = ranker.run(settings, TRAINED_DAY, plan=plan)
    published = score_topk.run(spark, settings, TRAINED_DAY)
    return built, report, published


def _candidates(settings, day: date) -> pd.DataFrame:
    return pq.read_table(Warehouse(settings.warehouse_root, "tmall_brand").candidates(TRAINED_DAY) / f"anchor={day}")


def _examples(settings) -> pd.DataFrame:
    path = settings.warehouse_root / "marts" / "parquet" / "training_examples"
    frame = pd.read_parquet(path, columns=["user_id", "item_id", "label", "ds"]).rename(columns={"label": "category"})
    frame["ds"] = pd.to_datetime(frame["ds"]).dt.date
    return frame


def test_every_anchor_has_its_users_candidates_with_the_sources_that_proposed_them(settings, plan, night):
    built = night[0]
    assert set(built["anchors"]) == {str(d) for d in plan.days()}
    examples = _examples(settings)
    known = examples[examples["ds"] <= TRAINED_DAY]["user_id"].nunique()
    assert built["anchors"][str(plan.serve)]["users"] == known  # every user known by E gets candidates
    for w in (*plan.train, plan.eval_long):
        table = _candidates(settings, w.day).to_pandas()
        bought = examples[(examples["ds"] >= w.day) & (examples["ds"] < w.end) & (examples["category"] == 4)]
        assert set(bought["user_id"]) <= set(table["user_id"]), w  # every buyer of a label window has candidates
        assert not table.duplicated(["user_id", "item_id"]).any()
        for source in settings.ranker.sources:
            proposed = table[f"rank__{source}"].notna()
            assert (proposed == table["sources"].apply(lambda s, source=source: source in s)).all(), source
    history = _candidates(settings, plan.serve).to_pandas()
    pairs = examples.groupby("user_id")["item_id"].nunique()
    got = history[history["rank__history"].notna()].groupby("user_id").size()
    assert got.to_dict() == pairs.to_dict()  # the whole history of every user, no cap


def test_the_baselines_from_the_candidates_are_the_reference_baselines(settings, night):
    table = _candidates(settings, T)
    users = sorted(set(table.column("user_id").to_pylist()))
    examples = _examples(settings)
    history = rb.History(examples[examples["ds"] < T], T)
    grouped = ranking.group_by_user(table)
    for name in ranking.BASELINES:
        lists = ranking.lists_of(ranking.rank_users(grouped, ranking.baseline_scorer(name), K))
        expected = rb.BASELINES[name](history, users, K)
        assert lists == {u: expected[u] for u in users}, name


def test_pair_features_are_the_pairs_history_before_the_anchor(settings, plan, night):
    """Recomputed with DuckDB from fct_interactions, independently of the mart and the job."""
    anchor = plan.train[1].day
    table = _candidates(settings, anchor).to_pandas()
    mine = table[table["rank__history"].notna()].set_index(["user_id", "item_id"])
    facts = settings.warehouse_root / "marts" / "parquet" / "fct_interactions" / "*.parquet"
    expected = duckdb.sql(
        f"""
        select user_id, item_id,
            count(*) as days_total,
            sum(n_level_1) as level_1_total,
            sum(case when ds >= date '{anchor}' - 7 then n_level_1 else 0 end) as level_1_7d,
            sum(case when ds >= date '{anchor}' - 30 then n_level_4 else 0 end) as level_4_30d,
            date '{anchor}' - max(case when n_level_4 > 0 then ds end) as days_since_level_4,
            date '{anchor}' - max(ds) as days_since_last,
            sum(max_level_reached * pow(0.5, (date '{anchor}' - ds) / 14.0)) as interest_14d
        from read_parquet('{facts}')
        where ds < date '{anchor}'
        group by 1, 2
        """
    ).df()
    expected = expected[expected["user_id"].isin(set(table["user_id"]))].set_index(["user_id", "item_id"])
    joined = mine.join(expected, how="inner")
    assert len(joined) == len(mine) == len(expected)
    for feature in ("days_total", "level_1_total", "level_1_7d", "level_4_30d", "days_since_last"):
        assert np.array_equal(joined[f"pair__{feature}"].to_numpy(), joined[feature].to_numpy(float)), feature
    since = joined["days_since_level_4"].astype(float)
    assert np.array_equal(joined["pair__days_since_level_4"].isna(), since.isna())
    assert np.allclose(joined["pair__days_since_level_4"].dropna(), since.dropna())
    assert np.allclose(joined["pair__interest_14d"], joined["interest_14d"], rtol=1e-9)
    assert (joined["pair__days_since_last"] >= 1).all()  # nothing from the anchor day or later


def test_item_and_user_features_are_those_of_the_day_before_the_anchor(settings, plan, night):
    anchor = plan.train[0].day
    table = _candidates(settings, anchor).to_pandas()
    marts = settings.warehouse_root / "marts" / "parquet"
    items = pd.read_parquet(marts / "item_features").assign(ds=lambda f: pd.to_datetime(f["ds"]).dt.date)
    items = items[items["ds"] == anchor - timedelta(days=1)].set_index("item_id")
    got = table.drop_duplicates("item_id").set_index("item_id")
    both = got.join(items, how="inner")
    assert len(both) > 100
    assert np.array_equal(both["item__n_users_30d"].to_numpy(), both["n_users_30d"].to_numpy(float))
    assert got.loc[~got.index.isin(items.index), "item__n_users_30d"].isna().all()


def test_model_sources_are_the_models_own_lists_from_embeddings_trained_before_the_anchor(
    settings, plan, night, trained_tmall
):
    report = trained_tmall[0]
    judged = night[1]["metrics"]
    for kind in ("two_tower", "gnolr"):
        assert judged[kind]["30d"]["recall@20"] == pytest.approx(report["models"][kind]["metrics"]["recall@20"])
        assert judged[kind]["30d"]["ndcg@20"] == pytest.approx(report["models"][kind]["metrics"]["ndcg@20"])
        manifest = json.loads(
            (settings.warehouse_root / "models" / kind / str(TRAINED_DAY) / "manifest.json").read_text()
        )
        assert date.fromisoformat(manifest["data_range"]["train"][1]) <= plan.model_cutoff
    before = _candidates(settings, min(plan.days())).to_pandas()
    assert min(plan.days()) < plan.model_cutoff and before["score__two_tower"].isna().all()  # no model yet


def test_the_ranker_learns_before_the_held_out_window_and_is_judged_beside_every_baseline(plan, night):
    report = night[1]
    held_out = [date.fromisoformat(a) for a in report["training"]["held_out"]["anchors"]]
    assert held_out and all(a + timedelta(days=7) <= T for a in held_out)
    served = [date.fromisoformat(a) for a in report["training"]["served"]["anchors"]]
    assert set(held_out) < set(served) and max(served) == plan.serve - timedelta(days=7)
    table = report["metrics"]
    lists = {"ranker", "popularity", "own_history", "covisitation", "two_tower", "gnolr", "segment_popular"}
    assert set(table) == lists
    for horizon in ("30d", "7d"):
        assert len({row[horizon]["users"] for row in table.values()}) == 1  # every list on the same buyers
    best = max(ranking.BASELINES, key=lambda n: table[n]["30d"]["ndcg@20"])
    beats = table["ranker"]["30d"]["ndcg@20"] > table[best]["30d"]["ndcg@20"]
    assert report["lists"]["lists"] == ("ranker" if beats else best) and report["lists"]["baseline"] == best
    # no segments before these anchors: the segment list is the popular one, which keeps the cold-start list
    assert table["segment_popular"] == table["popularity"] and report["lists"]["cold_start"] == "popularity"
    # the stage says where its time went, phase by phase, within its total
    phases = report["phase_seconds"]
    assert list(phases) == ["held_out_set", "held_out_fit", "judging", "served"]
    assert all(s >= 0 for s in phases.values()) and sum(phases.values()) <= report["seconds"] + 0.1


def test_the_published_lists_are_the_evaluated_kernel_run_on_the_serving_candidates(settings, plan, night):
    decision, published = night[1]["lists"], night[2]
    current = pd.read_parquet(Warehouse.of(settings).serving_topk() / "current").sort_values(["user_id", "rank"])
    wh = Warehouse(settings.warehouse_root, "tmall_brand")
    scorer = (
        ranking.BoosterScorer(ranking.served_booster(wh, decision["ranker_version"]))
        if decision["lists"] == "ranker"
        else ranking.baseline_scorer(decision["lists"])
    )
    expected = ranking.rank_users(ranking.group_by_user(_candidates(settings, plan.serve)), scorer, K).to_pandas()
    assert current["item_id"].tolist() == expected.sort_values(["user_id", "rank"])["item_id"].tolist()
    assert (current.groupby("user_id").size() == K).all() and published["users"] == current["user_id"].nunique()
    assert current["sources"].apply(lambda s: len(s) > 0 and set(s) <= set(settings.ranker.sources)).all()
    assert (current["source"] == decision["lists"]).all()


def test_a_worse_ranker_trained_beside_the_champion_leaves_the_champion_and_its_lists(settings, plan, night):
    """The champion gate with a real model: a ranker that learns nothing (one round at a vanishing rate), trained as
    a new version on the same night. Both are judged on the same held-out window; the new one is worse beyond the
    tolerance, so the champion pointer stays and the night's decision is the champion's, as when it was trained. The
    new version is written (and judged), never served."""
    wh = Warehouse.of(settings)
    before = wh.champion_pointer("ranker").read_text()
    weak = settings.with_overrides(ranker=replace(settings.ranker, rounds=1, learning_rate=1e-9))
    report = ranker.run(weak, TRAINED_DAY, plan=plan, version="learns-nothing")
    gate = report["gate"]
    assert (gate["publish"], gate["reason"]) == (False, "worse than the champion"), gate
    assert gate["new"] < gate["champion"] - gate["tolerance"]
    assert wh.champion_pointer("ranker").read_text() == before
    assert report["lists"] == night[1]["lists"]  # the champion's lists, decided as on its own night
    assert json.loads((wh.model_dir("ranker", "learns-nothing") / "metrics.json").read_text())["gate"] == gate


def test_a_ranker_that_loses_to_a_baseline_publishes_the_baselines_list(spark, settings, plan, night):
    """A ranker that learns nothing (one round at a vanishing rate: every candidate scores the same, lists in item id
    order) does not beat the best baseline: the night publishes that baseline's list and says why."""
    weak = settings.with_overrides(ranker=replace(settings.ranker, rounds=1, learning_rate=1e-9))
    report = ranker.run(weak, TRAINED_DAY, plan=plan)  # a rerun of the champion's night replaces the champion
    assert report["gate"]["publish"] and "rerun" in report["gate"]["reason"]
    decision = report["lists"]
    assert decision["lists"] in ranking.BASELINES and "does not beat" in decision["reason"]
    score_topk.run(spark, weak, TRAINED_DAY)
    current = pd.read_parquet(Warehouse.of(settings).serving_topk() / "current")
    assert (current["model_version"] == f"{decision['lists']}-{TRAINED_DAY}").all()
    examples = _examples(settings)
    users = sorted(current["user_id"].unique())
    expected = rb.BASELINES[decision["lists"]](rb.History(examples, plan.serve), users, K)
    got = {u: g.sort_values("rank")["item_id"].tolist() for u, g in current.groupby("user_id")}
    assert got == {u: expected[u] for u in users}
