"""User-item scores per second: the Spark top-k job's scoring versus a single-process NumPy limit, same machine.

Synthetic unit-norm float32 embeddings (the catalogues here are up-scaled: the real Tmall champion has ~7k items
and ~900 users, too small to time). For each size USERSxITEMS:

* NumPy limit: one process, blocks of users, ``users @ items.T`` (float32 BLAS) + ``argpartition`` per block.
* NumPy top_k: the kernel the job runs (nightrec.scoring.top_k: the same, plus the tie-break and the final sort).
* Spark: spark_jobs.score_topk.score_batches through ``mapInArrow`` over the users read from Parquet, the item
  matrix broadcast, output rows (user, rank, item, score) counted by a no-op sink; Spark start-up excluded.

    python benchmarks/topk_scoring.py --sizes 100000x10000,1000000x100000
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from _figures import record_figure  # benchmarks/ is on sys.path when a script here runs

from nightrec.config import PROJECT_ROOT, load_settings
from nightrec.scoring import top_k


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_users(path: Path, users: int, dim: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    writer = None
    for lo in range(0, users, 200_000):
        n = min(200_000, users - lo)
        vectors = unit(rng, n, dim)
        table = pa.table(
            {
                "user_id": pa.array([f"u{i}" for i in range(lo, lo + n)]),
                "embedding": pa.FixedSizeListArray.from_arrays(vectors.ravel(), dim),
                "bought_ids": pa.nulls(n, pa.list_(pa.string())),
            }
        )
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=50_000)
    assert writer is not None
    writer.close()


def numpy_limit(users: np.ndarray, items: np.ndarray, k: int, block: int) -> float:
    t0 = time.perf_counter()
    for lo in range(0, len(users), block):
        scores = users[lo : lo + block] @ items.T
        np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return time.perf_counter() - t0


def numpy_kernel(users: np.ndarray, items: np.ndarray, k: int, block: int) -> float:
    t0 = time.perf_counter()
    for lo in range(0, len(users), block):
        top_k(users[lo : lo + block], items, k)
    return time.perf_counter() - t0


def spark_job(spark, users_file: Path, items: np.ndarray, k: int, block: int) -> tuple[float, int]:
    from spark_jobs.score_topk import output_schema, score_batches

    ids = [f"i{n:07d}" for n in range(len(items))]  # sorted: the tie-break order
    shared = spark.sparkContext.broadcast((ids, items, np.zeros(len(items), dtype=bool)))
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(block))
    frame = spark.read.parquet(str(users_file))
    scored = frame.mapInArrow(lambda b: score_batches(b, shared, k, "bench", None), output_schema(False))
    t0 = time.perf_counter()
    scored.write.format("noop").mode("overwrite").save()
    seconds = time.perf_counter() - t0
    return seconds, frame.count() * k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000x10000,1000000x100000", help="USERSxITEMS, comma-separated")
    parser.add_argument("--dim", type=int, default=32, help="embedding size (the two-tower default)")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--block", type=int, default=2048, help="users per block / Arrow batch")
    parser.add_argument("--numpy-users", type=int, default=0, help="time NumPy on this many users (0: all)")
    parser.add_argument("--workdir", type=Path, default=PROJECT_ROOT / ".bench" / "topk")
    args = parser.parse_args()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from spark_jobs.common import build_spark

    settings = load_settings()
    spark = build_spark(
        settings.with_overrides(spark=settings.spark.__class__(master="local[*]", driver_memory="8g")), "bench-topk"
    )
    rows = []
    try:
        for size in args.sizes.split(","):
            n_users, n_items = (int(x) for x in size.lower().split("x"))
            shutil.rmtree(args.workdir, ignore_errors=True)
            args.workdir.mkdir(parents=True)
            users_file = args.workdir / "users.parquet"
            write_users(users_file, n_users, args.dim, seed=1)
            items = unit(np.random.default_rng(2), n_items, args.dim)
            sample = args.numpy_users or n_users
            users = np.stack(
                pq.read_table(users_file, columns=["embedding"])
                .slice(0, sample)["embedding"]
                .to_numpy(zero_copy_only=False)
            ).astype(np.float32)
            limit = numpy_limit(users, items, args.k, args.block)
            kernel = numpy_kernel(users, items, args.k, args.block)
            del users
            spark_s, out_rows = spark_job(spark, users_file, items, args.k, args.block)
            per = {
                "numpy limit": sample * n_items / limit,
                "numpy top_k": sample * n_items / kernel,
                "spark": n_users * n_items / spark_s,
            }
            print(
                f"{size}: numpy limit {limit:.1f}s on {sample:,} users, top_k {kernel:.1f}s, spark {spark_s:.1f}s "
                f"({out_rows:,} rows)",
                flush=True,
            )
            rows.append((n_users, n_items, sample, per))
    finally:
        spark.stop()
        shutil.rmtree(args.workdir, ignore_errors=True)
    cores = os.cpu_count()
    print(f"\nscores/s (millions), dim {args.dim}, k {args.k}, {cores} cores, Spark local[*]")
    print("| users x items | NumPy users timed | NumPy limit | NumPy top_k | Spark job | Spark / limit |")
    print("|---|---|---|---|---|---|")
    for n_users, n_items, sample, per in rows:
        print(
            f"| {n_users:,} x {n_items:,} | {sample:,} | {per['numpy limit'] / 1e6:,.1f} | "
            f"{per['numpy top_k'] / 1e6:,.1f} | {per['spark'] / 1e6:,.1f} | {per['spark'] / per['numpy limit']:.0%} |"
        )
        data = f"synthetic {n_users:,} users x {n_items:,} items, dim {args.dim}, k {args.k}"
        for name, label in (
            ("numpy limit", "NumPy limit"),
            ("numpy top_k", "NumPy top_k kernel"),
            ("spark", "Spark job"),
        ):
            record_figure("topk_scoring", f"{label} scores/s", round(per[name]), "scores/s", data)
        record_figure(
            "topk_scoring", "Spark job / NumPy limit", round(per["spark"] / per["numpy limit"], 3), "ratio", data
        )


if __name__ == "__main__":
    main()
