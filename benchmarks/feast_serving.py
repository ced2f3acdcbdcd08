"""Feast figures on a built warehouse: materialization rows/s and online lookup latency, SQLite and Redis.

Needs a warehouse whose marts are exported (`make demo` builds ./warehouse). For each online store it applies the
repository, materializes the whole history (the bootstrap's job, in the profile's chunks), then times
`get_online_features` for the `serving` service (all three views, list features included) with 1 and 100 entities
through the SDK, and 1 entity through the HTTP feature server (`nightrec feast serve`, one kept-alive client
connection). Starts its own Redis. The redis variant's store is nightrec.feast_redis.OnePassRedisOnlineStore; a last
row times Feast's own RedisOnlineStore over the same Redis keys (SDK only), for comparison.

    python benchmarks/feast_serving.py --warehouse warehouse
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pandas as pd
from _figures import record_figure  # benchmarks/ is on sys.path when a script here runs

from nightrec import feature_store
from nightrec.adapters import load_adapter
from nightrec.config import PROJECT_ROOT, load_settings
from nightrec.feast_redis import STORE_TYPE
from nightrec.warehouse import Warehouse


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def _time(fn, repeat: int) -> tuple[float, float]:
    fn()  # warm-up (registry cache, connections)
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return _percentiles(samples)


def _http(settings, rows: list[dict], repeat: int) -> tuple[float, float]:
    port = _free_port()
    env = {**os.environ, **settings.environment()}
    args = [
        sys.executable,
        "-m",
        "nightrec_app.cli",
        "feast",
        "serve",
        "--port",
        str(port),
        "--variant",
        settings.feast.variant,
    ]
    server = subprocess.Popen(args, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    body = json.dumps(
        {
            "feature_service": "serving",
            "entities": {"user_id": [r["user_id"] for r in rows], "item_id": [r["item_id"] for r in rows]},
            "full_feature_names": True,
        }
    ).encode()

    # one kept-alive connection, as a service's HTTP client pool has: the figure is the server's, not TCP set-up's
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def call() -> None:
        connection.request("POST", "/get-online-features", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"feature server answered {response.status}")

    try:
        deadline = time.time() + 60
        while True:
            try:
                call()
                break
            except OSError:
                connection.close()
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        return _time(call, repeat)
    finally:
        connection.close()
        server.terminate()
        server.wait(timeout=20)


def _lookups(store, pairs: list[dict], repeat: int) -> tuple[tuple[float, float], ...]:
    """SDK p50/p99 for 1 entity, 100 entities and one user with 100 candidate items, for the `serving` service."""
    service = store.get_feature_service("serving")
    # A serving process freezes its start-up heap; without this, collections of the benchmark's own objects
    # (the marts it read) show up as 200 ms p99 spikes that a feature server does not have.
    gc.collect()
    gc.freeze()

    def lookup(rows: list[dict]) -> None:
        store.get_online_features(features=service, entity_rows=rows, full_feature_names=True).to_dict()

    def ranking_request(n: int) -> list[dict]:
        # one user and n candidate items: what a re-ranking service asks for
        user = random.choice(pairs)["user_id"]
        return [{"user_id": user, "item_id": p["item_id"]} for p in random.sample(pairs, n)]

    return (
        _time(lambda: lookup(random.sample(pairs, 1)), repeat),
        _time(lambda: lookup(random.sample(pairs, 100)), max(repeat // 3, 30)),
        _time(lambda: lookup(ranking_request(100)), max(repeat // 3, 30)),
    )


def _feasts_redis_store(settings):
    """The redis variant's store with Feast's RedisOnlineStore in place of the one-pass store (same Redis keys)."""
    from feast import FeatureStore

    text = feature_store.store_yaml(settings).read_text()
    plain = Path(tempfile.mkdtemp()) / "feature_store.yaml"
    plain.write_text(text.replace(f"type: {STORE_TYPE}", "type: redis"))
    return FeatureStore(repo_path=str(feature_store.FEATURE_REPO), fs_yaml_file=plain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warehouse", type=Path, default=PROJECT_ROOT / "warehouse", help="a built warehouse")
    parser.add_argument(
        "--repeat", type=int, default=1000, help="lookups per 1-entity figure (a third of it per 100-entity figure)"
    )
    args = parser.parse_args()
    base = load_settings().with_overrides(warehouse_root=args.warehouse.resolve())
    adapter = load_adapter(base.source)
    features = pd.read_parquet(Warehouse.of(base).mart_export("user_features"))
    users = features[features["ds"] == features["ds"].max()]
    pairs = [{"user_id": u, "item_id": i} for u, i in zip(users["user_id"], users["top_item_90d"], strict=True)]
    del features, users
    random.seed(0)

    redis_dir = Path(tempfile.mkdtemp())
    port = _free_port()
    redis = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", "", "--dir", str(redis_dir)],
        stdout=subprocess.DEVNULL,
    )
    os.environ["NIGHTREC_REDIS"] = f"127.0.0.1:{port}"
    time.sleep(0.5)
    table = []
    try:
        for variant, store in (("local", "SQLite"), ("redis", "Redis")):
            settings = base.with_overrides(feast=replace(base.feast, variant=variant))
            feature_store.apply(settings)
            t0 = time.time()
            chunks = feature_store.materialize(settings, adapter.history_start, adapter.history_end + timedelta(days=1))
            seconds = time.time() - t0
            rows = sum(sum(c.rows.values()) for c in chunks)
            sdk1, sdk100, rank100 = _lookups(feature_store.open_store(settings), pairs, args.repeat)
            http1 = _http(settings, random.sample(pairs, 1), args.repeat)
            table.append((store, f"{rows:,}", f"{seconds:.1f}", f"{rows / seconds:,.0f}", sdk1, sdk100, rank100, http1))
        # Feast's own RedisOnlineStore over the same keys: what nightrec.feast_redis's one-pass read saves
        feasts = _lookups(_feasts_redis_store(settings), pairs, args.repeat)
        table.append(("Redis, Feast's RedisOnlineStore", "(same keys)", "-", "-", *feasts, None))
    finally:
        redis.terminate()
        shutil.rmtree(redis_dir, ignore_errors=True)

    service = feature_store.open_store(settings).get_feature_service("serving")
    n_features = sum(len(p.features) for p in service.feature_view_projections)
    print(f"\nFeast on {base.warehouse_root} ({adapter.name}; serving = 3 views, {n_features} features incl. lists)")
    print("SDK 100 = 100 distinct users and items; 1x100 = one user and 100 candidate items (a ranking request)")
    print("| online store | materialized rows | seconds | rows/s | SDK 1 p50/p99 ms | SDK 100 p50/p99 ms", end="")
    print(" | SDK 1x100 p50/p99 ms | HTTP 1 p50/p99 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for store, rows, seconds, rate, sdk1, sdk100, rank100, http1 in table:
        cells = [f"{p50:.2f}/{p99:.2f}" for p50, p99 in (sdk1, sdk100, rank100)]
        cells.append(f"{http1[0]:.2f}/{http1[1]:.2f}" if http1 else "-")
        print(f"| {store} | {rows} | {seconds} | {rate} | {' | '.join(cells)} |")
        data = f"{adapter.name} marts of {base.warehouse_root.name}, {rows} feature rows"
        if rate != "-":
            record_figure("feast", f"materialize, {store}", float(rate.replace(",", "")), "rows/s", data)
        for name, latency in (
            ("SDK 1 entity", sdk1),
            ("SDK 100 entities", sdk100),
            ("SDK 1 user x 100 items", rank100),
            ("HTTP 1 entity", http1),
        ):
            if latency:
                record_figure(
                    "feast", f"lookup p50, {store}, {name}", round(latency[0], 2), "ms", data, p99=round(latency[1], 2)
                )


if __name__ == "__main__":
    main()
