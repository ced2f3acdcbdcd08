"""Lookalike expansion on known inputs: seed validation and predicates, the positive-unlabelled scorer, audiences
and their recall."""

from __future__ import annotations

import numpy as np
import pytest

from nightrec.lookalike import (
    centroid_scores,
    converter_lift,
    expand,
    fit_pu,
    hidden_recall,
    share_recall,
    split_seed,
)
from nightrec.seeds import SeedError, check_seed, predicate_users

POPULATION = [f"u{i}" for i in range(10)]


def test_a_seed_is_checked_before_any_work():
    check = check_seed([" u3", "u1", "u3", "ghost", "", "u9"], POPULATION)
    assert check.members.tolist() == [1, 3, 9]  # positions, sorted, duplicates and blanks dropped
    assert check.unknown == ("ghost",) and "1 unknown id(s) left out: ghost" in check.summary()
    with pytest.raises(SeedError, match="empty"):
        check_seed(["", "  "], POPULATION)
    with pytest.raises(SeedError, match="None of the seed's 2 id"):
        check_seed(["x", "y"], POPULATION)
    with pytest.raises(SeedError, match="6 of 10 consumers"):
        check_seed(POPULATION[:6], POPULATION)
    assert len(check_seed(POPULATION[:5], POPULATION).members) == 5  # exactly half is allowed


def test_the_scorer_finds_unlabelled_positives_from_a_small_seed():
    rng = np.random.default_rng(0)
    n, n_pos = 4000, 200
    x = rng.normal(size=(n, 3))
    x[:n_pos, 0] += 2.0  # positives differ in the first feature only
    x[:, 2] = 7.0  # a constant column: scale 1, no influence, no division by zero
    labelled = np.zeros(n, dtype=bool)
    labelled[:40] = True  # 40 of the 200 positives are the seed; the other 160 are unlabelled
    scorer = fit_pu(x, labelled)
    assert scorer.weights[0] > 0 and abs(scorer.weights[0]) > 5 * abs(scorer.weights[1])
    assert scorer.weights[2] == 0.0
    scores = scorer.scores(x)
    hidden_pos, negatives = scores[40:n_pos], scores[n_pos:]
    auc = (hidden_pos[:, None] > negatives[None, :]).mean()
    assert auc > 0.9  # the true AUC of the first feature alone is about 0.92
    with pytest.raises(SeedError):
        fit_pu(x, np.zeros(n, dtype=bool))
    bad = x.copy()
    bad[5, 1] = np.nan
    with pytest.raises(Exception, match="NaN"):
        fit_pu(bad, labelled)


def test_the_fit_runs_on_one_blas_thread_and_gives_the_threads_back(monkeypatch):
    """Each step of the fit is two matrix-vector products; OpenBLAS's threads cost more than they save there (at 10x
    the e2e night's consumers a fit took 2.9 s with them, 0.13 s without: decision 36)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from nightrec import lookalike

    def blas_threads() -> set[int]:
        return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}

    seen: list[set[int]] = []
    real = lookalike.minimize

    def watched(*args, **kwargs):
        seen.append(blas_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(lookalike, "minimize", watched)
    rng = np.random.default_rng(1)
    x, seed = rng.normal(size=(500, 4)), np.zeros(500, dtype=bool)
    seed[:25] = True
    with threadpool_limits(limits=2, user_api="blas"):  # as on a 2-core machine, whatever this one has
        before = blas_threads()
        fit_pu(x, seed)
        after = blas_threads()
    assert before == after == {2} and seen == [{1}]


def test_an_audience_leaves_out_the_seed_and_breaks_ties_by_population_order():
    scores = np.array([0.5, 0.9, 0.9, 0.1, 0.9, 0.7])
    assert expand(scores, np.array([2]), 3).tolist() == [1, 4, 5]
    assert expand(scores, np.array([1, 2]), 10).tolist() == [4, 5, 0, 3]  # never more than the candidates


def test_hidden_recall_on_known_scores():
    # 20 consumers; visible seed = 0, 1; hidden = 2, 3, 4. Scores put 2 first, then 10..19, then 3, then the rest.
    scores = np.zeros(20)
    scores[[0, 1]] = 100.0
    scores[2] = 50.0
    scores[10:20] = np.linspace(40, 31, 10)
    scores[3] = 30.0
    result = hidden_recall(scores, np.array([0, 1]), np.array([2, 3, 4]), multiples=(1, 5, 10))
    # audiences of 2, 10 and 20 (capped at the 18 candidates): [2, 10], [2, 10..18], [2, 10..19, 3, 4?...]
    assert result.recall[1] == pytest.approx(1 / 3)
    assert result.recall[5] == pytest.approx(1 / 3)
    assert result.recall[10] == pytest.approx(1.0)  # all 18 candidates, so every hidden member
    assert result.random == {1: 2 / 18, 5: 10 / 18, 10: 1.0}
    assert result.lift(1) == pytest.approx((1 / 3) / (2 / 18))
    assert (result.visible, result.hidden, result.candidates) == (2, 3, 18)
    # a perfect ranking in 10% of the 18 candidates (2 consumers) finds two of the three hidden members
    assert result.best_at_share(0.1) == pytest.approx(2 / 3) and result.best_at_share(0.5) == 1.0


def test_recall_at_shares_of_the_population_on_known_scores():
    # 42 consumers, 2 visible: 40 candidates; shares 5%, 10%, 25% -> audiences of 2, 4 and 10
    scores = np.arange(42, dtype=float)[::-1].copy()  # consumer 0 best ... 41 worst
    scores[[0, 1]] = 1000.0  # the visible seed: never in its own audience
    hidden = np.array([3, 5, 20])
    found = share_recall(scores, np.array([0, 1]), hidden, shares=(0.05, 0.10, 0.25))
    # audiences [2, 3], [2, 3, 4, 5], [2..11]
    assert found == {0.05: pytest.approx(1 / 3), 0.10: pytest.approx(2 / 3), 0.25: pytest.approx(2 / 3)}


def test_an_audience_is_judged_by_the_consumers_who_take_up_the_seeds_behaviour_later():
    # 42 consumers, the seed 0 and 1: 40 candidates; 10% of them is an audience of 4: consumers 2, 3, 4, 5
    scores = np.arange(42, dtype=float)[::-1].copy()
    seed = np.array([0, 1])
    # later converters: 1 (in the seed: does not count), 3 and 5 (in the audience), 30 and 31 (outside it)
    lift, best = converter_lift(scores, seed, np.array([1, 3, 5, 30, 31]), share=0.10)
    base = 4 / 40  # four converters among the 40 candidates
    assert lift == pytest.approx((2 / 4) / base) and best == pytest.approx((4 / 4) / base)
    # more converters than the audience holds: the best an audience of 4 can do is all four
    lift, best = converter_lift(scores, seed, np.arange(2, 22), share=0.10)
    assert lift == pytest.approx(1 / (20 / 40)) and best == pytest.approx(1 / (20 / 40))
    assert all(np.isnan(converter_lift(scores, seed, np.array([0, 1]), share=0.10)))  # nobody outside converted


def test_a_seed_is_split_into_disjoint_visible_and_hidden_members():
    rng = np.random.default_rng(1)
    seed = np.arange(100, 110)
    visible, hidden = split_seed(seed, rng)
    assert len(hidden) == 3 and len(visible) == 7
    assert sorted([*visible, *hidden]) == seed.tolist()
    assert split_seed(np.array([4, 8]), rng)[1].size == 1  # at least one member on each side
    with pytest.raises(SeedError, match="at least two"):
        split_seed(np.array([4]), rng)


def test_centroid_similarity_prefers_rows_near_the_seed():
    x = np.array([[0.0, 0.0], [1.0, 1.0], [0.9, 1.1], [5.0, 5.0], [1.2, 0.8]])
    scores = centroid_scores(x, np.array([1, 2]))
    ranked = np.argsort(-scores).tolist()
    assert set(ranked[:2]) == {1, 2} and ranked[2] == 4
    assert scores[3] == scores.min()


@pytest.fixture
def analysts_db(tmp_path):
    """A tiny stand-in for the analysts' database: the three schemas, two tables, and one table outside them."""
    import duckdb

    path = tmp_path / "analysts.duckdb"
    with duckdb.connect(str(path)) as con:
        for schema in ("marts", "bronze", "silver"):
            con.execute(f"create schema {schema}")
        con.execute(
            "create table marts.fct_interactions as select * from (values ('a', 'x', 4), ('a', 'x', 4), "
            "('b', 'x', 4), ('c', 'y', 4), ('d', 'x', 1)) t(user_id, item_id, max_level_reached)"
        )
        con.execute("create table silver.sequences as select 'a' as user_id")
        con.execute("create table main.secrets as select 'z' as user_id")
    return path


def test_a_predicate_is_one_select_over_the_analysts_views(analysts_db):
    twice = (
        "with buys as (select user_id from marts.fct_interactions where item_id = 'x' and max_level_reached = 4) "
        "select user_id, count(*) as n from buys group by user_id having count(*) >= 2"
    )
    assert predicate_users(analysts_db, twice) == ["a"]
    bought_x = "select distinct user_id from marts.fct_interactions where item_id = 'x' and max_level_reached = 4"
    assert predicate_users(analysts_db, bought_x) == ["a", "b"]
    refused = {
        "select user_id from marts.fct_interactions; select user_id from silver.sequences": "2 statements",
        "delete from marts.fct_interactions": "DELETE statement",
        "create table marts.t as select 1": "CREATE statement",
        "select user_id from read_parquet('/etc/passwd')": "may not call read_parquet",
        "select user_id from range(10) t(user_id)": "may not call range",
        "select user_id from main.secrets": "main.secrets is not one",
        "select item_id from marts.fct_interactions": "returns a user_id column",
        "select user_id from marts.no_such_mart": "marts.no_such_mart is not one",
        "selec user_id": "does not parse",
    }
    for predicate, problem in refused.items():
        with pytest.raises(SeedError, match=problem):
            predicate_users(analysts_db, predicate)
    slow = (
        "with recursive r(i) as (select 1 union all select i + 1 from r where i < 10000000000) "
        "select s.user_id from silver.sequences s, r where r.i < 0"
    )
    with pytest.raises(SeedError, match=r"ran longer than 0\.2 s"):
        predicate_users(analysts_db, slow, timeout_s=0.2)
    with pytest.raises(SeedError, match="No analysts' database"):
        predicate_users(analysts_db.parent / "missing.duckdb", bought_x)


def test_saved_audiences_are_read_and_checked(tmp_path):
    from nightrec.audiences import audiences_file, saved_audiences
    from nightrec.errors import ConfigError

    shipped = saved_audiences("tmall_brand")  # the bundled file parses
    assert [a.name for a in shipped] == ["brand_7868_buyers", "repeat_buyers_90d"]
    assert audiences_file("no_such_source").name == "no_such_source.yaml" and saved_audiences("no_such_source") == []
    path = tmp_path / "a.yaml"
    path.write_text("- name: a\n  seed_sql: select user_id from marts.dim_users\n  size: 3\n")
    (only,) = saved_audiences("x", path)
    assert (only.name, only.size) == ("a", 3)
    for text, problem in [
        ("name: a", "must hold a list"),
        ("- name: a", "needs a name and a seed_sql"),
        ("- {name: a, seed_sql: s, colour: red}", "Unknown key"),
        ("- {name: a, seed_sql: s, size: 0}", "size must be"),
        ("- {name: a, seed_sql: s}\n- {name: a, seed_sql: t}", "appears twice"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=problem):
            saved_audiences("x", path)
