"""The published lists' kernel (nightrec.ranking) on hand-made candidates: tiers and popular fill, ties, the cut at k,
the sources and probabilities each row carries, and the LightGBM ranker scoring inside it."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest

from nightrec import ranking

NAN = float("nan")


def _flat(rows: list[dict]) -> pa.Table:
    """Candidate rows with every column the kernel reads (missing values: NaN, as in the job's Parquet)."""
    columns = [
        "rank__history",
        "score__history",
        "rank__popular_30d",
        "score__popular_30d",
        "rank__gnolr",
        "score__gnolr",
        "gnolr__p_above_0",
        "gnolr__p_above_1",
        "x",
    ]
    return pa.table(
        {
            "user_id": [r["user"] for r in rows],
            "item_id": [r["item"] for r in rows],
            "sources": [r["sources"] for r in rows],
            **{c: pa.array([float(r.get(c, NAN)) for r in rows], pa.float64()) for c in columns},
        }
    )


ROWS = [
    # u1: two history items (b ahead of a), popular items p1 > p2 (p2 also in the history: history wins)
    {"user": "u1", "item": "a", "sources": ["history"], "rank__history": 2, "score__history": 1.0},
    {"user": "u1", "item": "b", "sources": ["history"], "rank__history": 1, "score__history": 3.0},
    {"user": "u1", "item": "p1", "sources": ["popular_30d"], "rank__popular_30d": 1, "score__popular_30d": 9},
    {
        "user": "u1",
        "item": "p2",
        "sources": ["history", "popular_30d"],
        "rank__history": 3,
        "score__history": 1.0,
        "rank__popular_30d": 2,
        "score__popular_30d": 5,
    },
    {
        "user": "u1",
        "item": "g",
        "sources": ["gnolr"],
        "rank__gnolr": 1,
        "score__gnolr": 2.0,
        "gnolr__p_above_0": 0.4,
        "gnolr__p_above_1": 0.1,
    },
    # u0: no history, popular items only (listed before u1 once grouped)
    {"user": "u0", "item": "p2", "sources": ["popular_30d"], "rank__popular_30d": 2, "score__popular_30d": 5},
    {"user": "u0", "item": "p1", "sources": ["popular_30d"], "rank__popular_30d": 1, "score__popular_30d": 9},
]


def _lists(scorer: ranking.Scorer, k: int, rows: list[dict] = ROWS, levels: int = 0) -> pa.Table:
    return ranking.rank_users(ranking.group_by_user(_flat(rows)), scorer, k, levels)


def test_own_history_ranks_the_history_by_score_ties_by_item_id_then_fills_with_popular_items():
    lists = ranking.lists_of(_lists(ranking.baseline_scorer("own_history"), 10))
    # b (3.0) first; a and p2 tie at 1.0: the smaller id first; then p1, the popular item not in the history;
    # g was proposed by GNOLR only: not in this baseline's list
    assert lists == {"u0": ["p1", "p2"], "u1": ["b", "a", "p2", "p1"]}


def test_popularity_gives_everyone_the_same_order_and_k_cuts_each_list():
    ranked = _lists(ranking.baseline_scorer("popularity"), 1)
    assert ranked.column("user_id").to_pylist() == ["u0", "u1"]
    assert ranked.column("item_id").to_pylist() == ["p1", "p1"]
    assert ranked.column("rank").to_pylist() == [1, 1]


def test_rows_carry_their_sources_score_and_gnolr_probabilities_where_gnolr_scored_the_item():
    ranked = _lists(ranking.SourceScorer("mixed", ("gnolr", "history")), 2, levels=2).to_pylist()
    u1 = [r for r in ranked if r["user_id"] == "u1"]
    assert [r["item_id"] for r in u1] == ["g", "b"] and [r["rank"] for r in u1] == [1, 2]
    assert u1[0]["sources"] == ["gnolr"] and u1[0]["p_at_least"] == pytest.approx([0.4, 0.1])
    assert u1[1]["p_at_least"] is None and u1[1]["score"] == pytest.approx(3.0)
    assert not [r for r in ranked if r["user_id"] == "u0"]  # neither source proposed u0 anything


def test_the_booster_scores_every_candidate_and_survives_pickling():
    import lightgbm as lgb

    rng = np.random.default_rng(0)
    x = rng.uniform(size=(400, 1))
    booster = lgb.train(
        {"objective": "regression", "verbose": -1, "min_data_in_leaf": 5, "num_threads": 1},
        lgb.Dataset(x, label=x[:, 0], feature_name=["x"]),
        num_boost_round=30,
    )
    scorer = pickle.loads(pickle.dumps(ranking.BoosterScorer(booster.model_to_string())))
    rows = [{"user": "u", "item": f"i{n}", "sources": ["history"], "x": v} for n, v in enumerate([0.1, 0.9, 0.5])]
    ranked = _lists(scorer, 2, rows)
    assert ranked.column("item_id").to_pylist() == ["i1", "i2"]
    expected = booster.predict(np.array([[0.9], [0.5]]))
    assert ranked.column("score").to_pylist() == pytest.approx(expected.astype(np.float32).tolist())


def test_feature_names_follow_the_levels_and_sources():
    names = ranking.feature_names(4, ("history", "popular_30d", "gnolr"))
    assert names[:2] == ["rank__history", "score__history"] and "n_sources" in names
    assert "pair__open_intent_level_3" in names and "pair__open_intent_level_4" not in names  # 4 = the purchase
    assert [n for n in names if n.startswith("gnolr__")] == [f"gnolr__p_above_{c}" for c in range(4)]
    single = ranking.feature_names(1, ("history", "popular_30d"))
    assert not [n for n in single if n.startswith(("gnolr__", "pair__open_intent", "item__conversion"))]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("max_rows", [1, 2, 5, 6, 100])
def test_ranking_in_slices_of_users_gives_the_lists_of_ranking_all_at_once(max_rows):
    # more users than the fixture's two, with ties and the popular fill, so that slices cut between users (a slice
    # smaller than a user's candidates still takes that whole user)
    rows = [{**r, "user": f"{r['user']}-{copy}"} for copy in range(4) for r in ROWS]
    grouped = ranking.group_by_user(_flat(rows))
    for scorer in (ranking.baseline_scorer("own_history"), ranking.baseline_scorer("popularity")):
        whole = ranking.rank_users(grouped, scorer, 3, levels=2)
        sliced = ranking.rank_in_batches(grouped, scorer, 3, max_rows, levels=2)
        assert sliced.num_rows == whole.num_rows > 0
        assert sliced.to_pylist() == whole.to_pylist()
    assert ranking.rank_in_batches(grouped.slice(0, 0), ranking.baseline_scorer("popularity"), 3, 2).num_rows == 0


def test_grouping_a_table_in_user_order_gives_the_same_lists_as_sorting_it_without_copying_it():
    rows = [{**r, "user": f"{r['user']}-{copy}"} for copy in range(3) for r in ROWS]
    shuffled = _flat(rows)
    in_order = shuffled.take(pa.array(np.argsort(np.asarray(shuffled.column("user_id").to_pylist()), kind="stable")))
    assert in_order.column("user_id").to_pylist() != shuffled.column("user_id").to_pylist()  # the fixture interleaves
    grouped, sorted_here = ranking.group_by_user(in_order), ranking.group_by_user(shuffled)
    assert repr(grouped.to_pylist()) == repr(sorted_here.to_pylist())  # repr: NaN equals NaN
    # the candidate lists are views over the in-order table's columns, not copies of them
    score = grouped.column("candidates").chunk(0).flatten().field("score__history")
    assert score.buffers()[1].address == in_order.column("score__history").chunk(0).buffers()[1].address
