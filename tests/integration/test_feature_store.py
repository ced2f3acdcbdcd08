"""Feast over the real Tmall marts: apply, point-in-time training sets (no loss, no leakage), materialization of a
data interval, online lookups on SQLite and on a real Redis server, and the HTTP feature server."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest

from nightrec import feature_store, forget
from nightrec.config import PROJECT_ROOT
from nightrec.errors import InputError
from tests.servers import free_port

pytestmark = pytest.mark.spark

DAYS = (date(2014, 8, 13), date(2014, 8, 16))  # data days [start, end)


@pytest.fixture(scope="module")
def marts(tmall_marts):
    """The dbt marts of the whole Tmall history, exported to Parquet as the DAG's publish task does."""
    root = tmall_marts.warehouse_root / "marts" / "parquet"
    return {
        m: pd.read_parquet(root / m) for m in ("user_features", "item_features", "user_sequences", "training_examples")
    }


@pytest.fixture(scope="module")
def applied(tmall_warehouse, marts):
    settings = tmall_warehouse.with_overrides(feast=replace(tmall_warehouse.feast, materialize_chunk_days=1))
    counts = feature_store.apply(settings)
    return settings, counts


def test_apply_registers_the_repository(applied):
    settings, counts = applied
    assert counts == {"entities": 2, "feature_views": 3, "feature_services": 2}
    # the lists' service before any list is published: a message that says when it appears, not Feast's traceback
    with pytest.raises(
        InputError, match=r"No feature service 'topk' .*publish_topk has published it\. Registered now: serving, train"
    ):
        feature_store.online_features(settings, [{"user_id": "1", "item_id": ""}], "topk")
    store = feature_store.open_store(settings)
    sequence = store.get_feature_view("user_sequence")
    types = {f.name: str(f.dtype) for f in sequence.features}
    assert types["seq_item_ids"].startswith("Array(String") and types["seq_levels"].startswith("Array(Int32")
    projections = store.get_feature_service("serving").feature_view_projections
    served = {p.name: [f.name for f in p.features] for p in projections}
    assert set(served) == {"user_features", "item_features", "user_sequence"}
    assert served["user_sequence"][:3] == ["seq_item_ids", "seq_levels", "seq_gap_seconds"]
    trained = {p.name: len(p.features) for p in store.get_feature_service("training").feature_view_projections}
    assert trained == {v.name: len(v.features) for v in store.list_feature_views()}  # training reads everything
    assert all(len(served[name]) < trained[name] for name in served)  # serving, a subset, stays cheap per lookup


def test_training_set_keeps_every_entity_row_and_never_sees_the_future(applied, marts):
    settings, _ = applied
    examples = marts["training_examples"]
    examples = examples[examples["ds"] >= date(2014, 8, 1)]
    entity_df = examples[["user_id", "item_id", "example_ts"]].rename(columns={"example_ts": "event_timestamp"})
    entity_df["event_timestamp"] = pd.to_datetime(entity_df["event_timestamp"]).dt.tz_localize("UTC")
    unknown = pd.DataFrame(
        {
            "user_id": ["no-such-user"],
            "item_id": ["no-such-item"],
            "event_timestamp": [datetime(2014, 8, 10, tzinfo=UTC)],
        }
    )
    entity_df = pd.concat([entity_df, entity_df.head(50), unknown], ignore_index=True)  # duplicates are rows too
    out = feature_store.historical_features(settings, entity_df)
    assert len(out) == len(entity_df)  # no loss

    # Asked in batches (feast.fetch_batch_rows: three, the last one short), the same rows come back.
    batched = settings.with_overrides(feast=replace(settings.feast, fetch_batch_rows=len(entity_df) // 3 + 1))
    in_batches = feature_store.historical_features(batched, entity_df)
    key = ["user_id", "item_id", "event_timestamp"]
    scalars = [c for c in out.columns if c in key or out[c].dtype != object]
    assert len(scalars) > 20 and len(in_batches) == len(out)
    pd.testing.assert_frame_equal(
        in_batches[scalars].sort_values(key, kind="stable").reset_index(drop=True),
        out[scalars].sort_values(key, kind="stable").reset_index(drop=True),
    )

    # Expected: the user's feature row with the latest feature_ts <= the example time, within the 2-day ttl.
    feats = marts["user_features"][["user_id", "feature_ts", "n_events_7d"]].copy()
    feats["feature_ts"] = pd.to_datetime(feats["feature_ts"]).dt.tz_localize("UTC").astype("datetime64[us, UTC]")
    left = entity_df.assign(_row=range(len(entity_df))).sort_values("event_timestamp")
    left["event_timestamp"] = left["event_timestamp"].astype("datetime64[us, UTC]")
    expected = pd.merge_asof(
        left,
        feats.sort_values("feature_ts"),
        left_on="event_timestamp",
        right_on="feature_ts",
        by="user_id",
        direction="backward",
        tolerance=pd.Timedelta(days=2),
    ).set_index("_row")
    got = out.merge(
        entity_df.assign(_row=range(len(entity_df))), on=["user_id", "item_id", "event_timestamp"], how="left"
    )
    got = got.drop_duplicates("_row").set_index("_row")["user_features__n_events_7d"]
    exp = expected.loc[got.index, "n_events_7d"]
    assert (got.fillna(-1).astype(float) == exp.fillna(-1).astype(float)).all()

    # No leakage: an example at D 00:00 gets the features computed through D-1, never D's own (feature_ts D+1).
    same_day = marts["user_features"][["user_id", "ds", "n_events_7d"]]
    example = examples.iloc[0]
    today = same_day[(same_day.user_id == example.user_id) & (same_day.ds == example.ds)]["n_events_7d"]
    before = same_day[(same_day.user_id == example.user_id) & (same_day.ds == example.ds - pd.Timedelta(days=1))]
    row = out[(out.user_id == example.user_id) & (out.event_timestamp == pd.Timestamp(example.example_ts, tz="UTC"))]
    value = row["user_features__n_events_7d"].iloc[0]
    assert len(today) == 1 and (before.empty or value == before["n_events_7d"].iloc[0])
    assert out.loc[out.user_id == "no-such-user"].filter(like="user_features__").isna().all(axis=None)


def test_materializing_the_interval_serves_the_latest_day_online(applied, marts, caplog):
    settings, _ = applied
    window = feature_store.materialization_window(*DAYS)
    assert window == (datetime(2014, 8, 14, tzinfo=UTC), datetime(2014, 8, 16, tzinfo=UTC))
    with caplog.at_level(logging.INFO, logger="nightrec.feature_store"):
        chunks = feature_store.materialize(settings, *DAYS)
    assert [c.days for c in chunks] == [(d, d) for d in (date(2014, 8, 13), date(2014, 8, 14), date(2014, 8, 15))]
    progress = [r.getMessage() for r in caplog.records if r.name == "nightrec.feature_store"]
    assert any(m.startswith("feast materialize: data days 2014-08-15..2014-08-15 (3/3 days)") for m in progress)
    # users active on 2014-08-15: their features and their sequence state both carry that day
    sequences = marts["user_sequences"].set_index(["user_id", "ds"])
    active = {u for u, d in sequences.index if d == date(2014, 8, 15)}
    feats = marts["user_features"]
    last = feats[(feats["ds"] == date(2014, 8, 15)) & feats["user_id"].isin(active)].head(20)
    assert len(last) == 20
    rows = [{"user_id": u, "item_id": i} for u, i in zip(last["user_id"], last["top_item_90d"], strict=True)]
    online = feature_store.online_features(settings, [*rows, {"user_id": "nobody", "item_id": "nothing"}])
    assert online["user_features__n_events_30d"][:-1] == last["n_events_30d"].tolist()
    assert online["user_features__n_events_30d"][-1] is None and online["item_features__n_events_7d"][-1] is None
    for k, user in enumerate(last["user_id"]):
        latest = sequences.loc[(user, date(2014, 8, 15))]
        assert online["user_sequence__seq_item_ids"][k] == list(latest["seq_item_ids"])
        assert online["user_sequence__seq_levels"][k] == list(latest["seq_levels"])
    again = feature_store.materialize(settings, *DAYS)  # idempotent
    assert feature_store.online_features(settings, rows) == {k: v[:-1] for k, v in online.items()}
    assert len(again) == 3


def test_redis_online_store_serves_the_same_values(applied, marts, redis_server, monkeypatch):
    settings, _ = applied
    monkeypatch.setenv("NIGHTREC_REDIS", redis_server)
    redis_settings = settings.with_overrides(feast=replace(settings.feast, variant="redis"))
    feature_store.materialize(redis_settings, *DAYS)
    feature_store.materialize(settings, *DAYS)
    users = marts["user_features"][marts["user_features"]["ds"] == date(2014, 8, 15)]["user_id"].head(10)
    rows = [{"user_id": u, "item_id": "4"} for u in users] + [{"user_id": "nobody", "item_id": "nothing"}]
    assert feature_store.online_features(redis_settings, rows) == feature_store.online_features(settings, rows)

    # a forgotten user's key goes from Redis (#26: `nightrec forget`): their lookups come back empty, no one else's
    before = feature_store.online_features(redis_settings, rows)
    assert forget.forget_online(redis_settings, [users.iloc[0]], dry_run=True) == 1
    assert forget.forget_online(redis_settings, [users.iloc[0]], dry_run=False) == 1
    after = feature_store.online_features(redis_settings, rows)
    for name, values in after.items():
        if name.startswith(("user_features__", "user_sequence__")):
            assert values[0] is None and values[1:] == before[name][1:], name
        else:  # the item's features stay
            assert values == before[name], name
    assert forget.forget_online(redis_settings, [users.iloc[0]], dry_run=False) == 0


def test_one_pass_redis_store_answers_exactly_as_feasts_redis_store_with_fewer_reads(
    applied, marts, redis_server, monkeypatch, tmp_path, caplog
):
    """The redis and production variants use nightrec.feast_redis.OnePassRedisOnlineStore. Over the same Redis keys,
    Feast's own RedisOnlineStore must give the identical response proto and dict, through the sync and the async
    (HTTP feature server) path, while the store sends one HMGET per entity for the two user views instead of two."""
    import asyncio

    import redis
    from feast import FeatureStore

    from nightrec.feast_redis import OnePassRedisOnlineStore

    settings, _ = applied
    monkeypatch.setenv("NIGHTREC_REDIS", redis_server)
    redis_settings = settings.with_overrides(feast=replace(settings.feast, variant="redis"))
    feature_store.materialize(redis_settings, *DAYS)  # written through the one-pass store (Feast's write path)
    ours = feature_store.open_store(redis_settings)
    yaml_text = feature_store.store_yaml(redis_settings).read_text()
    assert "type: nightrec.feast_redis.OnePassRedisOnlineStore" in yaml_text
    stock_yaml = tmp_path / "feature_store.yaml"
    stock_yaml.write_text(yaml_text.replace("type: nightrec.feast_redis.OnePassRedisOnlineStore", "type: redis"))
    feasts = FeatureStore(repo_path=str(feature_store.FEATURE_REPO), fs_yaml_file=stock_yaml)
    assert type(ours._get_provider().online_store) is OnePassRedisOnlineStore
    assert type(feasts._get_provider().online_store).__name__ == "RedisOnlineStore"

    sequences = marts["user_sequences"]
    active = set(sequences.loc[sequences["ds"] == date(2014, 8, 15), "user_id"])  # a sequence row in the window
    feats = marts["user_features"]
    last = feats[(feats["ds"] == date(2014, 8, 15)) & feats["user_id"].isin(active)].head(40)
    pairs = list(zip(last["user_id"], last["top_item_90d"], strict=True))
    pairs += [("nobody", "nothing"), pairs[0], pairs[0], (pairs[1][0], "nothing"), ("nobody", pairs[2][1])]
    rows = {"user_id": [u for u, _ in pairs], "item_id": [i for _, i in pairs]}
    requests = [
        {"features": ours.get_feature_service("serving"), "full_feature_names": True},
        {"features": ours.get_feature_service("training"), "full_feature_names": True},  # all 3 views, every feature
        {"features": ["user_sequence:seq_levels", "item_features:n_users_7d", "user_features:top_item_90d"]},
    ]
    expected = [feasts.get_online_features(entity_rows=rows, **request) for request in requests]
    for request, want in zip(requests, expected, strict=True):
        got = ours.get_online_features(entity_rows=rows, **request)
        assert got.proto == want.proto
        assert got.to_dict(include_event_timestamps=True) == want.to_dict(include_event_timestamps=True)

    async def read_async() -> list:  # one event loop: the store keeps its async client
        return [await ours.get_online_features_async(entity_rows=rows, **request) for request in requests]

    assert [r.proto for r in asyncio.run(read_async())] == [r.proto for r in expected]
    served = got.to_dict()
    assert all(served["seq_levels"][: len(last)]) and served["n_users_7d"][0] is not None  # values, not only nulls
    assert served["seq_levels"][len(last)] is None and served["top_item_90d"][len(last)] is None  # unknown user

    # reads: Feast's store sends one HMGET per (entity, view); this one per entity for the views keyed alike
    client = redis.Redis.from_url(f"redis://{redis_server}")
    users, items = len(set(rows["user_id"])), len(set(rows["item_id"]))

    def hmgets(store) -> int:
        before = client.info("commandstats").get("cmdstat_hmget", {}).get("calls", 0)
        store.get_online_features(
            features=store.get_feature_service("serving"), entity_rows=rows, full_feature_names=True
        )
        return client.info("commandstats")["cmdstat_hmget"]["calls"] - before

    assert hmgets(feasts) == 2 * users + items
    assert hmgets(ours) == users + items  # inside one script call per entity type

    # a server whose ACL refuses scripts: one warning, then the same HMGETs through one pipeline
    client.acl_setuser("default", enabled=True, nopass=True, keys=["*"], commands=["+@all", "-@scripting"])
    with caplog.at_level(logging.WARNING, logger="nightrec.feast_redis"):
        for request, want in zip(requests, expected, strict=True):
            assert ours.get_online_features(entity_rows=rows, **request).proto == want.proto
    warnings = [r.getMessage() for r in caplog.records if r.name == "nightrec.feast_redis"]
    assert len(warnings) == 1 and "refused the lookup script" in warnings[0]
    assert hmgets(ours) == users + items
    client.acl_setuser("default", enabled=True, nopass=True, keys=["*"], commands=["+@all"])

    # where scripts are not allowed (a Redis cluster, the GLIDE client) the same HMGETs go through one pipeline
    fresh = feature_store.open_store(redis_settings)
    monkeypatch.setattr(OnePassRedisOnlineStore, "_scripts_allowed", staticmethod(lambda cfg: False))
    for request, want in zip(requests, expected, strict=True):
        assert fresh.get_online_features(entity_rows=rows, **request).proto == want.proto
    assert hmgets(fresh) == users + items


def test_http_feature_server_answers_lookups_and_rejects_malformed_requests(applied, marts):
    settings, _ = applied
    feature_store.materialize(settings, *DAYS)
    port = free_port()
    env = {**os.environ, "NIGHTREC_WAREHOUSE_ROOT": str(settings.warehouse_root)}
    server = subprocess.Popen(
        [sys.executable, "-m", "nightrec_app.cli", "feast", "serve", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/get-online-features"
    try:
        user = marts["user_features"][marts["user_features"]["ds"] == date(2014, 8, 15)].iloc[0]
        body = {
            "feature_service": "serving",
            "entities": {"user_id": [user.user_id], "item_id": [user.top_item_90d]},
            "full_feature_names": True,
        }
        answer = _post(url, body, wait=60)
        names = answer["metadata"]["feature_names"]
        values = dict(zip(names, (r["values"][0] for r in answer["results"]), strict=True))
        assert values["user_features__n_events_30d"] == user.n_events_30d
        assert _status(url, {"feature_service": "serving"}) // 100 == 4  # no entities
        assert _status(url, b"{not json") // 100 == 4
    finally:
        server.terminate()
        server.wait(timeout=20)
    # a terminated `nightrec feast serve` takes its server down with it: nothing keeps listening on the port
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def _post(url: str, body: dict, wait: float) -> dict:
    deadline = time.time() + wait
    while True:
        try:
            req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read())
        except (urllib.error.URLError, ConnectionError):
            if time.time() > deadline:
                raise
            time.sleep(0.5)


def _status(url: str, body: dict | bytes) -> int:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def test_feature_store_yaml_variants_exist_for_every_profile_choice():
    for variant in ("local", "redis", "production"):
        text = (PROJECT_ROOT / "feature_repo" / f"feature_store.{variant}.yaml").read_text()
        assert "project: nightrec" in text
    assert Path(feature_store.store_yaml(__import__("nightrec.config").config.load_settings("local", env={}))).name == (
        "feature_store.local.yaml"
    )


def test_production_variant_redis_postgres_registry_spark_offline(applied, marts, redis_server, postgres, monkeypatch):
    """The production feature_store.yaml, unchanged: Redis online store, SQL registry on Postgres, Spark offline
    store and Spark materialization (executors write their partitions; the driver never holds a window). Only the
    environment differs from the local variant, and every user's and item's online answer is the same."""
    settings, _ = applied
    monkeypatch.setenv("NIGHTREC_REDIS", redis_server)
    monkeypatch.setenv("NIGHTREC_FEAST_REGISTRY", postgres)
    production = settings.with_overrides(feast=replace(settings.feast, variant="production"))
    assert feature_store.apply(production) == {"entities": 2, "feature_views": 3, "feature_services": 2}
    store = feature_store.open_store(production)
    engine = store._get_provider().batch_engine  # what materialize will run on
    assert type(engine).__name__ == "SparkComputeEngine"
    # Spark's own 1g driver ran out of heap on a 100x training fetch: both sessions start with the profile's memory
    for spark_conf in (store.config.offline_store.spark_conf, store.config.batch_engine.spark_conf):
        assert spark_conf["spark.driver.memory"] == settings.spark.driver_memory
    feature_store.materialize(production, *DAYS)
    users = marts["user_features"][marts["user_features"]["ds"] == date(2014, 8, 15)]
    items = users.top_item_90d.fillna("")
    rows = [{"user_id": u, "item_id": i} for u, i in zip(users.user_id, items, strict=True)]
    assert len(rows) > 500 and items.nunique() > 50
    feature_store.materialize(settings, *DAYS)
    online = feature_store.online_features(production, rows)
    assert online == feature_store.online_features(settings, rows)
    assert sum(v is not None for v in online["user_features__n_events_30d"]) == len(rows)
    examples = marts["training_examples"]
    entity_df = examples[examples["ds"] == date(2014, 8, 15)].head(40)[["user_id", "item_id", "example_ts"]]
    entity_df = entity_df.rename(columns={"example_ts": "event_timestamp"})
    entity_df["event_timestamp"] = pd.to_datetime(entity_df["event_timestamp"]).dt.tz_localize("UTC")
    spark_set = feature_store.historical_features(production, entity_df)
    duck_set = feature_store.historical_features(settings, entity_df)
    key = ["user_id", "item_id", "event_timestamp"]
    column = "user_features__n_events_30d"
    left = spark_set.sort_values(key)[column].astype(float).tolist()
    right = duck_set.sort_values(key)[column].astype(float).tolist()
    assert left == right and len(left) == 40
