"""Top-k tables on the real Tmall marts from trained (smoke) models: the Spark job, its publication, the online
lists and the analysts' mart, reruns, a crash before publishing, exclusions and rollback."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import date, timedelta

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nightrec import feature_store, topk_publish
from nightrec.errors import ReconciliationError
from nightrec.warehouse import Warehouse, champion
from spark_jobs import score_topk
from tests.conftest import TRAINED_DAY

pytestmark = pytest.mark.spark

K = 30
FIRST_DAY = date(2014, 8, 14)


@pytest.fixture(scope="module")
def settings(smoke_training, trained_tmall, tmp_path_factory):
    """A copy of the marts warehouse with the models exactly as the training run published them."""
    root = tmp_path_factory.mktemp("topk") / "warehouse"
    shutil.copytree(smoke_training.warehouse_root, root, symlinks=True, ignore=shutil.ignore_patterns("models"))
    shutil.copytree(trained_tmall[1], root / "models")
    # as if the champion were older than the users first seen after the evaluation start: they have no embedding
    embeddings = root / "models" / "gnolr" / str(TRAINED_DAY) / "user_embeddings.parquet"
    first_seen = duckdb.sql(
        f"select user_id from {_mart_path(root, 'dim_users')} where first_event_ds >= date '2014-07-17'"
    ).df()["user_id"]
    table = pq.read_table(embeddings)
    pq.write_table(table.filter(pa.array(~np.isin(table["user_id"].to_pylist(), first_seen))), embeddings)
    base = smoke_training.with_overrides(warehouse_root=root)
    return base.with_overrides(topk=replace(base.topk, k=K, model="gnolr", exclude_bought=False))


def _mart_path(root, name: str) -> str:
    return f"read_parquet('{root / 'marts' / 'parquet' / name}/*.parquet')"


@pytest.fixture(scope="module")
def published(spark, settings):
    """Two nights scored and published: FIRST_DAY, then TRAINED_DAY (served online and to analysts)."""
    first = score_topk.run(spark, settings, FIRST_DAY)
    second = score_topk.run(spark, settings, TRAINED_DAY)
    served = topk_publish.serve(settings)
    return first, second, served


def _current(settings) -> pd.DataFrame:
    return pd.read_parquet(Warehouse.of(settings).serving_topk() / "current").sort_values(["user_id", "rank"])


def _mart(settings, name: str) -> str:
    return f"read_parquet('{settings.warehouse_root / 'marts' / 'parquet' / name}/*.parquet')"


def _popular_items(settings) -> list[str]:
    """The day's K most popular items (distinct users over 30 days), straight from the mart."""
    return (
        duckdb.sql(
            f"select item_id from {_mart(settings, 'item_features')} where ds = date '{TRAINED_DAY}' "
            f"order by n_users_30d desc, n_events_30d desc, item_id limit {K}"
        )
        .df()["item_id"]
        .tolist()
    )


def test_every_known_user_gets_k_ranked_items(settings, published):
    table = _current(settings)
    users = duckdb.sql(
        f"select user_id from {_mart(settings, 'dim_users')} where first_event_ds <= date '{TRAINED_DAY}'"
    ).df()
    assert set(table["user_id"]) == set(users["user_id"])
    per_user = table.groupby("user_id")
    assert (per_user.size() == K).all()  # 7k items, nothing excluded: min(k, eligible) = k
    assert (per_user["rank"].apply(lambda r: r.tolist() == list(range(1, K + 1)))).all()
    assert (per_user["score"].apply(lambda s: (np.diff(s.to_numpy()) <= 0).all())).all()
    assert not table.duplicated(["user_id", "item_id"]).any()
    items = duckdb.sql(f"select item_id from {_mart(settings, 'dim_items')}").df()
    assert set(table["item_id"]) <= set(items["item_id"])
    assert published[1]["rows"] == len(table) == K * len(users)
    assert published[1]["current"] == f"ds={TRAINED_DAY}/model=gnolr-{TRAINED_DAY}"


def test_model_lists_are_the_best_inner_products_and_carry_ordered_level_probabilities(settings, published):
    table = _current(settings)
    model_dir = settings.warehouse_root / "models" / "gnolr" / str(TRAINED_DAY)
    users = pq.read_table(model_dir / "user_embeddings.parquet").to_pandas().set_index("user_id")
    items = pq.read_table(model_dir / "item_embeddings.parquet").to_pandas().sort_values("item_id")
    matrix = np.stack(items["embedding"].to_numpy()).astype(np.float32)
    ids = items["item_id"].to_numpy()
    position = {item: n for n, item in enumerate(ids)}
    for user in sorted(users.index)[:25]:
        scores = matrix @ np.asarray(users.loc[user, "embedding"], dtype=np.float32)
        best = np.sort(scores)[::-1][:K]  # independent full sort
        got = table[table["user_id"] == user]
        # each listed item's score is its inner product, and the list holds the K best ones in order. Item by item
        # the order is only as exact as float32: two float32 sums of one product can differ in the last bit, and a
        # retrained model put two items at 0.12105398 here (0.12105395 and 0.12105397 in float64)
        assert np.allclose(got["score"], scores[[position[i] for i in got["item_id"]]], atol=1e-5)
        assert np.allclose(got["score"], best, atol=1e-5)
        assert (np.diff(got["score"].to_numpy()) <= 0).all()
        assert (got["source"] == "model").all()
    probs = np.stack(table.loc[table["source"] == "model", "p_at_least"].to_numpy())
    assert probs.shape[1] == 4 and ((probs >= 0) & (probs <= 1)).all() and (np.diff(probs, axis=1) <= 0).all()


def test_users_without_an_embedding_get_the_days_popular_items(settings, published):
    table = _current(settings)
    embeddings = settings.warehouse_root / "models" / "gnolr" / str(TRAINED_DAY) / "user_embeddings.parquet"
    embedded = set(pq.read_table(embeddings)["user_id"].to_pylist())
    cold = table[~table["user_id"].isin(embedded)]
    assert len(cold) and (cold["source"] == "popular").all()
    assert published[1]["cold_start_users"] == cold["user_id"].nunique()
    popular = _popular_items(settings)
    for _, rows in cold.groupby("user_id"):
        assert rows["item_id"].tolist() == popular


def test_users_without_an_embedding_get_their_segments_items_before_the_popular_ones(spark, settings, published):
    """A segmentation of the night before (two segments split on whether the consumer ever bought, and a third of one
    cold consumer with few items): where the night chose the segment list, a cold user's list is their segment
    members' most engaged items over the 30 days through the day (distinct members), then the day's popular items
    not already in it; where it did not, the popular items."""
    wh = Warehouse.of(settings)
    serve = TRAINED_DAY + timedelta(days=1)
    users = duckdb.sql(
        f"select u.user_id, coalesce(max(f.max_level_reached), 0) = 4 as buyer from {_mart(settings, 'dim_users')} u "
        f"left join {_mart(settings, 'fct_interactions')} f on f.user_id = u.user_id and f.ds <= date '{TRAINED_DAY}' "
        f"where u.first_event_ds <= date '{TRAINED_DAY}' group by 1"
    ).df()
    embeddings = settings.warehouse_root / "models" / "gnolr" / str(TRAINED_DAY) / "user_embeddings.parquet"
    cold = sorted(set(users["user_id"]) - set(pq.read_table(embeddings)["user_id"].to_pylist()))
    recent = duckdb.sql(
        f"select user_id, item_id from {_mart(settings, 'user_item_features')} "
        f"where ds < date '{serve}' and ds >= date '{serve - timedelta(days=30)}'"
    ).df()
    distinct_items = recent[recent["user_id"].isin(cold)].groupby("user_id")["item_id"].nunique()
    loner = distinct_items[distinct_items < 5].sort_values(kind="stable").index[0]  # a segment of its own
    users["segment_id"] = np.where(users["user_id"] == loner, 2, users["buyer"].astype(int))
    membership = wh.segments("membership") / f"ds={TRAINED_DAY - timedelta(days=1)}"
    membership.mkdir(parents=True)
    try:
        table = pa.Table.from_pandas(users[["user_id", "segment_id"]], preserve_index=False)
        pq.write_table(table, membership / "part-0.parquet")
        (membership / "_SUCCESS").write_text("{}")
        cold_frame = spark.createDataFrame([(u,) for u in cold], "user_id string")
        bought = score_topk._bought(spark, settings, TRAINED_DAY)
        fallback = score_topk._popular_fallback  # with segments: the night judged their list better than popularity
        lists = fallback(spark, settings, TRAINED_DAY, cold_frame, bought, "v", True, segments=True).toPandas()
        plain = fallback(spark, settings, TRAINED_DAY, cold_frame, bought, "v", True, segments=False).toPandas()
    finally:
        shutil.rmtree(membership)
    popular = _popular_items(settings)
    engaged = recent.merge(users[["user_id", "segment_id"]], on="user_id").drop_duplicates(["user_id", "item_id"])
    counts = engaged.groupby(["segment_id", "item_id"]).size().rename("n").reset_index()
    segment = users.set_index("user_id")["segment_id"]
    assert set(lists["user_id"]) == set(cold)
    for user, rows in lists.sort_values(["user_id", "rank"]).groupby("user_id"):
        ranked = counts[counts["segment_id"] == segment[user]].sort_values(["n", "item_id"], ascending=[False, True])
        own = ranked["item_id"].tolist()[:K]
        expected = own + [i for i in popular if i not in own][: K - len(own)]
        assert rows["item_id"].tolist() == expected, user
        assert rows["rank"].tolist() == list(range(1, K + 1))
        assert rows["source"].tolist() == ["segment_popular"] * len(own) + ["popular"] * (K - len(own))
    assert (lists.loc[lists["user_id"] == loner, "source"] == "popular").sum() > 0  # the small segment was filled
    for _, rows in plain.sort_values(["user_id", "rank"]).groupby("user_id"):  # otherwise the shop-wide list
        assert rows["item_id"].tolist() == popular and (rows["source"] == "popular").all()


def test_a_rerun_gives_the_same_table_and_the_first_night_stays_for_rollback(spark, settings, published):
    before = _current(settings).reset_index(drop=True)
    score_topk.run(spark, settings, TRAINED_DAY)
    after = _current(settings).reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)
    pointer = topk_publish.current(settings)
    assert [h["ds"] for h in pointer["history"]] == [str(FIRST_DAY)]  # the rerun added no history entry
    assert not list(Warehouse.of(settings).serving_topk().rglob(".tmp-*"))


def test_the_online_store_and_the_analysts_mart_serve_the_current_lists(settings, published):
    table = _current(settings)
    user = table["user_id"].iloc[0]
    online = feature_store.online_features(settings, [{"user_id": user, "item_id": ""}], "topk")
    assert online["user_topk__topk_item_ids"][0] == table[table["user_id"] == user]["item_id"].tolist()
    unknown = feature_store.online_features(settings, [{"user_id": "no-such-user", "item_id": ""}], "topk")
    assert unknown["user_topk__topk_item_ids"] == [None]
    with duckdb.connect(str(Warehouse.of(settings).analyst_db()), read_only=True) as con:
        n, users, models = con.execute(
            "select count(*), count(distinct user_id), count(distinct model_version) from marts.topk_current"
        ).fetchall()[0]
    assert (n, users, models) == (len(table), table["user_id"].nunique(), 1)
    assert published[2]["materialized_users"] == table["user_id"].nunique()


def test_a_crash_between_write_and_publish_leaves_the_previous_version_visible(spark, settings, published, monkeypatch):
    before = _current(settings).reset_index(drop=True)
    pointer = topk_publish.current(settings)

    def crash(*args, **kwargs):
        raise RuntimeError("killed before publishing")

    monkeypatch.setattr(topk_publish, "publish", crash)
    other = settings.with_overrides(topk=replace(settings.topk, model="two_tower"))
    with pytest.raises(RuntimeError, match="killed before publishing"):
        score_topk.run(spark, other, TRAINED_DAY)
    assert topk_publish.current(settings) == pointer
    pd.testing.assert_frame_equal(_current(settings).reset_index(drop=True), before)
    written = topk_publish.version_dir(settings, TRAINED_DAY, f"two_tower-{TRAINED_DAY}")
    assert json.loads((written / "_SUCCESS").read_text())["rows"] > 0  # written whole, just not published


def test_lists_that_fail_their_check_are_not_published_and_the_previous_ones_stay_served(spark, settings, published):
    """The publication gate: a corrupt champion (one user's embedding stored twice, so the user would get 2k rows)
    fails the version's check; nothing is published, readers keep the previous lists, nothing is left behind."""
    wh = Warehouse.of(settings)
    embeddings = wh.model_dir("gnolr", champion(wh, "gnolr")["version"]) / "user_embeddings.parquet"
    pointer, before = topk_publish.current(settings), _current(settings).reset_index(drop=True)
    table = pq.read_table(embeddings)
    user = table["user_id"][0].as_py()
    online = feature_store.online_features(settings, [{"user_id": user, "item_id": ""}], "topk")
    original = embeddings.read_bytes()
    try:
        pq.write_table(pa.concat_tables([table, table.slice(0, 1)]), embeddings)
        with pytest.raises(ReconciliationError, match=f"top-k check failed .*{user}"):
            score_topk.run(spark, settings, TRAINED_DAY)  # a rerun of the served night
    finally:
        embeddings.write_bytes(original)
    assert topk_publish.current(settings) == pointer
    pd.testing.assert_frame_equal(_current(settings).reset_index(drop=True), before)
    assert feature_store.online_features(settings, [{"user_id": user, "item_id": ""}], "topk") == online
    assert not list(wh.serving_topk().rglob(".tmp-*"))


def test_excluding_bought_items_leaves_none_and_counts_what_is_left(spark, settings, published):
    # k close to the catalogue, so that removing a buyer's items changes how many rows the buyer gets
    excluding = settings.with_overrides(topk=replace(settings.topk, model="two_tower", exclude_bought=True, k=7200))
    result = score_topk.run(spark, excluding, TRAINED_DAY)
    table = _current(settings)
    bought = duckdb.sql(
        f"select distinct user_id, item_id from {_mart(settings, 'fct_interactions')} "
        f"where ds <= date '{TRAINED_DAY}' and max_level_reached = 4"
    ).df()
    assert len(bought) and not len(table.merge(bought, on=["user_id", "item_id"]))
    embeddings = settings.warehouse_root / "models" / "two_tower" / str(TRAINED_DAY) / "item_embeddings.parquet"
    catalogue = set(pq.read_table(embeddings)["item_id"].to_pylist())
    n_items = len(catalogue)
    per_buyer = bought[bought["item_id"].isin(catalogue)].groupby("user_id").size()  # only these can be excluded
    model_users = table[table["source"] == "model"].groupby("user_id").size()
    for user, n in model_users.items():
        assert n == min(7200, n_items - per_buyer.get(user, 0)), user
    assert result["rows"] == len(table)


def test_rollback_returns_every_reader_to_the_previous_version(settings, published):
    newest = topk_publish.current(settings)  # the exclude-bought two_tower lists of the test above
    assert newest["model_version"] == f"two_tower-{TRAINED_DAY}"
    topk_publish.serve(settings)
    user = _current(settings)["user_id"].iloc[0]
    before = feature_store.online_features(settings, [{"user_id": user, "item_id": ""}], "topk")
    assert len(before["user_topk__topk_item_ids"][0]) > K  # online: the long lists
    back = topk_publish.rollback(settings)
    assert back["path"] == newest["history"][-1]["path"] == f"ds={TRAINED_DAY}/model=gnolr-{TRAINED_DAY}"
    served = topk_publish.serve(settings)
    assert served["served_ds"] == str(TRAINED_DAY)
    table = _current(settings)
    assert (table["model_version"] == f"gnolr-{TRAINED_DAY}").all()
    for user in (table["user_id"].iloc[0], table.loc[table["source"] == "popular", "user_id"].iloc[0]):
        online = feature_store.online_features(settings, [{"user_id": user, "item_id": ""}], "topk")
        expected = table[table["user_id"] == user]["item_id"].tolist()
        assert online["user_topk__topk_item_ids"][0] == expected and len(expected) == K
    with duckdb.connect(str(Warehouse.of(settings).analyst_db()), read_only=True) as con:
        assert con.execute("select count(*) from marts.topk_current").fetchall()[0][0] == len(table)


def test_a_same_day_rerun_reaches_a_redis_online_store(spark, settings, published, redis_server, monkeypatch):
    """Redis (through Feast) drops writes that are not newer than the stored row: each publication's lists carry one
    more microsecond, so a rerun of the same day with other lists replaces them online."""
    monkeypatch.setenv("NIGHTREC_REDIS", redis_server)
    redis = settings.with_overrides(feast=replace(settings.feast, variant="redis"))
    topk_publish.serve(redis)
    user = _current(settings)["user_id"].iloc[0]
    first = feature_store.online_features(redis, [{"user_id": user, "item_id": ""}], "topk")["user_topk__topk_item_ids"]
    assert len(first[0]) == K
    shorter = redis.with_overrides(topk=replace(redis.topk, k=K - 5))
    score_topk.run(spark, shorter, TRAINED_DAY)  # the same day and model version: the same feature day
    topk_publish.serve(redis)
    again = feature_store.online_features(redis, [{"user_id": user, "item_id": ""}], "topk")["user_topk__topk_item_ids"]
    assert again[0] == first[0][: K - 5]


def test_items_the_source_declares_unavailable_are_never_listed(spark, settings, published, monkeypatch):
    """No bundled source declares availability: declare it for Tmall and mark one user's best items unavailable."""
    from nightrec.adapters import load_adapter

    tmall = replace(load_adapter("tmall_brand"), has_availability=True)
    monkeypatch.setattr(score_topk, "load_adapter", lambda name: tmall)
    table = _current(settings)
    user = table.loc[table["source"] == "model", "user_id"].iloc[0]
    gone = table[table["user_id"] == user]["item_id"].head(3).tolist()
    snapshot = settings.warehouse_root / "bronze" / "item_attributes"
    shutil.rmtree(snapshot)
    snapshot.mkdir()
    items = sorted(set(table["item_id"]))
    available = pa.table({"item_id": items, "available": [i not in gone for i in items]})
    pq.write_table(available, snapshot / "part-00000.parquet")
    result = score_topk.run(spark, settings, TRAINED_DAY)
    after = _current(settings)
    assert not after["item_id"].isin(gone).any()
    assert (after.groupby("user_id").size() == K).all() and result["rows"] == len(after)
    kept = table[(table["user_id"] == user) & ~table["item_id"].isin(gone)]["item_id"].tolist()
    assert after[after["user_id"] == user]["item_id"].tolist()[: len(kept)] == kept  # the rest move up


def test_a_history_too_short_to_train_still_publishes_the_popular_list_and_says_why(spark, smoke_training, tmp_path):
    """No models, no ranker decision (training was skipped on a short history): every known user gets the day's
    popular items, published as `popular-<day>`, and the reason, with the training's own naming the settings that
    decide it, is in the version's counts and the run report."""
    from nightrec.run_manifest import read_run_manifest, update_run_manifest
    from nightrec.run_report import render

    root = tmp_path / "warehouse"
    skip = shutil.ignore_patterns("models", "serving", "candidates", "segments", "_runs")
    shutil.copytree(smoke_training.warehouse_root, root, symlinks=True, ignore=skip)
    settings = smoke_training.with_overrides(warehouse_root=root)
    settings = settings.with_overrides(topk=replace(settings.topk, k=K, model="ranker", exclude_bought=False))
    wh = Warehouse.of(settings)
    why = "Data 2014-08-01..2014-08-14 is too short for training.eval_days=30 (set them in the profile ...)"
    update_run_manifest(wh, FIRST_DAY, "training", {"skipped": why})

    result = score_topk.run(spark, settings, FIRST_DAY)
    assert result["model_version"] == f"popular-{FIRST_DAY}" and result["lists"] == "popular"
    assert result["reason"] == f"no ranker decision or candidates for {FIRST_DAY}: {why}"
    assert topk_publish.current(settings)["model_version"] == f"popular-{FIRST_DAY}"
    table = _current(settings)
    users = duckdb.sql(
        f"select user_id from {_mart(settings, 'dim_users')} where first_event_ds <= date '{FIRST_DAY}'"
    ).df()
    assert set(table["user_id"]) == set(users["user_id"]) and (table["source"] == "popular").all()
    popular = (
        duckdb.sql(
            f"select item_id from {_mart(settings, 'item_features')} where ds = date '{FIRST_DAY}' "
            f"order by n_users_30d desc, n_events_30d desc, item_id limit {K}"
        )
        .df()["item_id"]
        .tolist()
    )
    assert all(items == popular for items in table.groupby("user_id")["item_id"].apply(list))
    assert result["rows"] == K * len(users) == result["cold_start_users"] * K

    update_run_manifest(wh, FIRST_DAY, "topk", {"current": result["current"], "counts": result})
    report = render(read_run_manifest(wh, FIRST_DAY))
    assert f"the popular list for every user: no ranker decision or candidates for {FIRST_DAY}: {why}" in report


def _rollback_in_a_process(settings, kill_at: str):
    """`nightrec topk rollback` in a process of its own, killed by the fault hook as it publishes `kill_at`."""
    import os
    import subprocess
    import sys

    from nightrec.config import PROJECT_ROOT
    from nightrec.faults import KILL_AT_COMMIT

    env = {k: v for k, v in os.environ.items() if k != KILL_AT_COMMIT} | settings.environment()
    return subprocess.run(
        [sys.executable, "-m", "nightrec_app.cli", "topk", "rollback"],
        cwd=PROJECT_ROOT,
        env=env | {KILL_AT_COMMIT: kill_at},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_rollback_killed_at_either_step_ends_one_version_back_when_retried(settings, published):
    """The rollback publishes in two steps, the `current` link that readers of the files follow, then the pointer
    that records what is published. SIGKILL at either step, then the same command again: one version back, not two,
    and nothing the killed runs left behind."""
    import os
    import signal

    root = Warehouse.of(settings).serving_topk()
    now = topk_publish.current(settings)
    assert now["history"], "an earlier version to roll back to"
    back = now["history"][-1]["path"]

    killed = _rollback_in_a_process(settings, f"*/serving/topk/{topk_publish.LINK}")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert topk_publish.current(settings) == now and os.readlink(root / topk_publish.LINK) == now["path"]
    assert [p for p in root.iterdir() if p.name.startswith(f".tmp-{topk_publish.LINK}-")]  # its link, hidden

    killed = _rollback_in_a_process(settings, f"*/serving/topk/{topk_publish.POINTER}")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert os.readlink(root / topk_publish.LINK) == back  # the files' readers are back already...
    assert topk_publish.current(settings) == now  # ...the record is not: the retry starts from the same pointer

    # the retry in this process: it has dbt's DuckDB file open (the serving marts were built here), which a second
    # process could not write while this one lives
    assert topk_publish.rollback(settings)["path"] == back
    topk_publish.serve(settings)
    after = topk_publish.current(settings)
    assert after["path"] == back and after["history"] == now["history"][:-1]
    assert os.readlink(root / topk_publish.LINK) == back
    assert not [p.name for p in root.iterdir() if p.name.startswith((".tmp-", ".trash-"))]
