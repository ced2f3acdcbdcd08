"""The reference baselines (tests/reference_baselines.py) on a hand-made history, and the champion gate."""

from __future__ import annotations

from datetime import date

import pandas as pd

from tests import reference_baselines as rb
from training.registry import gate


def _history() -> rb.History:
    rows = [
        # user, item, level, day
        ("u1", "a", 1, date(2024, 1, 1)),  # old click
        ("u1", "b", 4, date(2024, 1, 28)),  # recent purchase
        ("u1", "c", 1, date(2024, 1, 28)),  # recent click
        ("u2", "b", 1, date(2024, 1, 20)),
        ("u2", "d", 1, date(2024, 1, 20)),
        ("u3", "d", 2, date(2024, 1, 25)),
        ("u3", "b", 1, date(2024, 1, 25)),
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "category", "ds"])
    return rb.History(frame, until=date(2024, 1, 29))


def test_popularity_counts_distinct_recent_users_and_breaks_ties_by_id():
    # last 30 days before 2024-01-29: b has 3 users, d 2, c 1; a (Jan 1) is 28 days old and counts 1
    assert rb.popular_items(_history(), 4) == ["b", "d", "a", "c"]
    assert rb.popularity(_history(), ["u1", "zz"], 2) == {"u1": ["b", "d"], "zz": ["b", "d"]}


def test_own_history_ranks_recent_and_deep_engagement_first_then_fills_with_popular_items():
    out = rb.own_history(_history(), ["u1", "new"], 4)
    # u1: b = 4 * 0.5^(1/14) > c = 1 * 0.5^(1/14) > a = 1 * 0.5^(28/14); then d, the popular item u1 never touched
    assert out["u1"] == ["b", "c", "a", "d"]
    assert out["new"] == ["b", "d", "a", "c"]  # no history: popularity


def test_covisitation_scores_items_seen_with_the_users_last_day():
    out = rb.covisitation(_history(), ["u2"], 3)
    # u2's last day holds b and d; b co-occurs with c (u1, Jan 28) and d (u2, u3); d with b twice
    assert out["u2"][:2] == ["b", "d"] and out["u2"][2] == "c"


def test_the_gate_publishes_unless_worse_than_the_champion_beyond_the_tolerance():
    assert gate({"ndcg@20": 0.10}, None, 0.005)["publish"] is True
    assert gate({"ndcg@20": 0.106}, {"ndcg@20": 0.11}, 0.005)["publish"] is True
    worse = gate({"ndcg@20": 0.10}, {"ndcg@20": 0.11}, 0.005)
    assert worse["publish"] is False and worse["champion"] == 0.11 and worse["reason"] == "worse than the champion"


def test_the_night_publishes_the_ranker_only_over_the_best_baseline_and_judges_the_cold_start_list():
    from training.ranker import decide

    def row(ndcg: float) -> dict:
        return {"30d": {"ndcg@20": ndcg, "recall@20": 0.0}}

    table = {"ranker": row(0.11), "popularity": row(0.037), "own_history": row(0.104), "covisitation": row(0.041)}
    both = decide({**table, "segment_popular": row(0.034)}, "v1")
    assert (both["lists"], both["baseline"], both["cold_start"]) == ("ranker", "own_history", "popularity")
    assert both["cold_start_reason"] == "segment_popular does not beat it (0.0340 <= 0.0370)"
    better = decide({**table, "ranker": row(0.09), "segment_popular": row(0.05)}, "v1")
    assert (better["lists"], better["cold_start"]) == ("own_history", "segment_popular")
    assert decide(table, None)["cold_start"] == "popularity"  # no segment list judged
