"""The saved lookalike audiences of a built night at 1x, 10x, ... the consumers: seconds per audience.

Each saved audience's seed comes from its predicate over the built warehouse's analysts' database
(conf/audiences/<source>.yaml). The Feast sources (`user_features` among them) and the night's consumer embeddings
are copied with every user k times under the up-scaler's ids (nightrec/upscale.py), and the seed with them, so the
population and the seed grow k-fold while each consumer's features stay the same. `nightrec.audiences.build` then
measures and expands each seed as the nightly `build_audiences` task does. A cost that grows much faster than k
points at the fit (its BLAS threads cost 2.9 s a fit at 10x until decision 36).

    python benchmarks/audience_scaling.py --warehouse warehouse --factors 1,10
"""

from __future__ import annotations

import shutil
import sys
import time
from datetime import date

import pyarrow.parquet as pq
from _figures import record_figure  # benchmarks/ is on sys.path when a script here runs
from _scratch import built_night_arguments, copied_users, scaled_marts

from nightrec import audiences
from nightrec.seeds import predicate_users
from nightrec.upscale import new_user_id
from nightrec.warehouse import Warehouse


def main() -> None:
    args, settings = built_night_arguments(__doc__, "consumers", "the source")
    source = Warehouse.of(settings)
    encoder = source.root / "models" / "consumer_encoder"
    nights = sorted(p.parent.name for p in encoder.glob("*/user_embeddings.parquet"))
    if not nights or not source.analyst_db().is_file():
        sys.exit(f"No consumer embeddings or analysts' database under {source.root}: run a nightly night first")
    day = date.fromisoformat(nights[-1])
    saved = audiences.saved_audiences(settings.source)
    seeds = {a.name: predicate_users(source.analyst_db(), a.seed_sql) for a in saved}
    print("| factor | audience | seed | consumers | seconds |")
    print("|---|---|---|---|---|")
    for factor in (int(f) for f in args.factors.split(",")):
        root = (args.workdir / f"audiences_x{factor}" / "warehouse").resolve()
        shutil.rmtree(root, ignore_errors=True)
        scaled_marts(source.root, factor, root)
        scaled = settings.with_overrides(warehouse_root=root)
        embeddings = Warehouse.of(scaled).consumer_embeddings(day)
        embeddings.parent.mkdir(parents=True)
        pq.write_table(copied_users(pq.read_table(source.consumer_embeddings(day)), factor), embeddings)
        consumers = len(audiences.population(scaled, day)[1])
        for audience in saved:
            seed = [new_user_id(user, k) for k in range(factor) for user in seeds[audience.name]]
            started = time.perf_counter()
            built = audiences.build(scaled, seed, audience.size, day)
            seconds = time.perf_counter() - started
            members = len(built.seed.members)
            print(f"| {factor} | {audience.name} | {members:,} | {consumers:,} | {seconds:.2f} |")
            data = f"{source.root.name} night {day} x{factor}: {consumers:,} consumers, seed {members:,}"
            record_figure("audience_scaling", f"{audience.name} seconds", round(seconds, 2), "s", data)


if __name__ == "__main__":
    main()
