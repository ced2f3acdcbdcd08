"""What the consumer segments add to the lists, measured without leakage: the segment-popular list against the
shop-wide popular one (the choice of the cold-start list) and the ranker with and without the segment source.

A nightly deployment only has segments from its first nights on, so on a fresh warehouse no training or evaluation
anchor can read any (nightrec.segments.membership_night), and benchmarks/training_quality.py sees the segment list
equal to popularity. This script copies a built warehouse (the marts, not the models), segments the consumers as of
one early night ``--night`` (the consumer encoder and the segments job, what the nightly segments group runs), and
then runs training_quality.py on the copy: every anchor from night + 2 on reads that segmentation, which knows
nothing after the night. The ranker's training anchors and the whole held-out window come after it when the night
is early enough. The copy is removed at the end (``--keep`` keeps it).

    python benchmarks/segment_lists.py --warehouse warehouse --night 2014-05-31 --seeds 0,1,2
    NIGHTREC_SOURCE=hm python benchmarks/segment_lists.py --warehouse <an H&M warehouse> --night 2020-05-31

The table has the ``segment_popular`` list and ``ranker_no_segments`` (the ranker without the segment source's
features) beside the rest; the differences include ``segment_popular - popularity`` and ``ranker -
ranker_no_segments`` with paired-bootstrap intervals.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from nightrec import feature_store
from nightrec.config import PROJECT_ROOT, load_settings

SKIPPED = ("models", "candidates", "segments", "serving", "docs", "gx")  # rebuilt here, or not read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warehouse", type=Path, default=PROJECT_ROOT / "warehouse", help="a built warehouse")
    parser.add_argument("--night", type=date.fromisoformat, required=True, help="the night to segment (YYYY-MM-DD)")
    parser.add_argument("--seeds", default="0,1,2", help="training_quality.py's seeds")
    parser.add_argument("--keep", action="store_true", help="keep the copy (its path is printed)")
    args = parser.parse_args()

    from spark_jobs import build_segments
    from spark_jobs.common import JobRun, build_spark
    from training import consumer_embeddings

    source = args.warehouse.resolve()
    copy = Path(tempfile.mkdtemp(prefix="nightrec-segment-lists-")) / "warehouse"
    shutil.copytree(source, copy, ignore=lambda folder, names: SKIPPED if Path(folder) == source else ())
    settings = load_settings().with_overrides(warehouse_root=copy)  # NIGHTREC_SOURCE etc. as training_quality.py
    feature_store.apply(settings)  # the copy's registry points at the copy's files
    t = time.time()
    encoder = consumer_embeddings.run(settings, args.night)
    spark = build_spark(settings, "benchmark-segment-lists")
    segments = build_segments.run(JobRun("build_segments", settings, args.night, args.night + timedelta(days=1), spark))
    spark.stop()
    print(
        f"segments of night {args.night}: {encoder['consumers']:,} consumers, k = {segments['k']} (silhouette "
        f"{segments['silhouette']:.3f}) in {time.time() - t:.0f}s; anchors from {args.night + timedelta(days=2)} "
        "read them",
        flush=True,
    )
    script = Path(__file__).with_name("training_quality.py")
    command = [sys.executable, str(script), "--warehouse", str(copy), "--seeds", args.seeds, "--no-ordinal"]
    try:
        subprocess.run(command, check=True)
    finally:
        if args.keep:
            print(f"copy kept: {copy}")
        else:
            shutil.rmtree(copy.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
