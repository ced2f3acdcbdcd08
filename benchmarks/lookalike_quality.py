"""Lookalike quality: how well expanding a seed finds its hidden members, per consumer representation, beside random.

    python benchmarks/lookalike_quality.py --warehouse warehouse                 # the demo's Tmall warehouse
    NIGHTREC_SOURCE=hm python benchmarks/lookalike_quality.py --warehouse <an H&M warehouse>

Recall is reported at audiences of 1x, 5x and 10x the expanded seed and at 5%, 10% and 20% of the population: on a
small population 10x a large seed is nearly everyone (a random audience finds almost every hidden member too), so the
summary is the lift over random in an audience of 10% of the population, per seed kind.

The population is every consumer of the ``user_features`` mart on day D (active in the 90 days up to D; default: the
mart's last day). Seeds, from ``fct_interactions`` over the same 90 days:
- item buyers: the buyers of the three items (Tmall: brands) with the most buyers, and of two of middling reach;
- category buyers, where the source has item categories: the buyers of its two largest categories;
- subcategory buyers, where single items have too few buyers to be seeds (H&M's articles): the three largest;
- heavy buyers: the tenth of buyers with the most purchase days.
For every seed and repeat, 30% of the seed is hidden, the rest is expanded, and the recall of the hidden members is
measured in audiences of 1x, 5x and 10x the expanded seed (``nightrec.lookalike``), for each representation:
- ``user_features``: the positive-unlabelled classifier on the mart's numeric columns (counts as log1p);
- ``rfm``: similarity to the seed's centre on recency, frequency (events) and monetary (purchases) over 90 days;
- ``random``: the exact expectation of a random audience of the same size.
- ``encoder:<objective>``: the same classifier on the consumer encoder's embeddings (``training.consumer_encoder``),
  trained on every consumer's sequence as of D once per objective and seed (``--encoder``, ``--encoder-seeds``); its
  epoch is chosen on validation seeds (the buyers of the items, or subcategories, ranked 4th to 8th), which no reported
  seed repeats;
  ``...+features``: the embedding and the ``user_features`` columns side by side; ``.../no-attributes``: the encoder
  without the items' and consumers' attributes (``--attributes both``), to measure what they add where the source
  has them (H&M: article group, type and colour; customer age band and club status); ``.../untrained``: the encoder
  at its random initialisation (``--encoder-epochs 8,0``), to measure what training adds.

Hiding members measures whether a representation holds the behaviour that defines a seed: a consumer who bought a
category has that purchase in their sequence and in counts over it. What an analyst expands a seed for is the
consumers who will take the behaviour up. ``--prospective DAYS`` takes D DAYS before the mart's last day, expands
each whole seed, and judges an audience of 10% of the candidates by the consumers outside the seed who do the seed's
behaviour (the same query) in the DAYS after D: lift over random, per seed and seed kind, beside the best possible
(``nightrec.lookalike.converter_lift``). A seed with fewer than 5 converters cannot be judged and is left out, so
``--prospective-seeds N`` (default 10) judges more seeds there: the buyers of the N items (H&M: subcategories) ranked
after the encoder's validation seeds and, where the source has behaviours below a purchase (Tmall), the visitors
(any behaviour) of the N most visited items. It ends with the audiences' representation minus each baseline, mean
over the judged seeds, with a 95% bootstrap interval over seeds (paired: every method is judged on the same seeds),
and each further encoder variant (objective or epochs) minus the first, encoder seed by encoder seed.

    NIGHTREC_SOURCE=hm python benchmarks/lookalike_quality.py --warehouse <H&M> --encoder both \
        --encoder-seeds 0,1,2 --prospective 30
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import islice
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from _figures import record_figure  # benchmarks/ is on sys.path when a script here runs

from nightrec.adapters import load_adapter
from nightrec.audiences import feature_matrix, population
from nightrec.config import SegmentSettings, Settings, load_settings
from nightrec.lookalike import (
    MULTIPLES,
    SHARES,
    HiddenRecall,
    centroid_scores,
    converter_lift,
    hidden_recall,
    pu_scores,
    share_recall,
    split_seed,
    validation_recall,
)
from nightrec.warehouse import Warehouse

WINDOW_DAYS = 90
ENCODER_EPOCHS = SegmentSettings().epochs  # the nightly encoder's (no profile changes it but smoke)


@dataclass(frozen=True)
class Seed:
    name: str
    kind: str
    members: np.ndarray  # positions in the population
    query: str = ""  # the seed's behaviour: a SELECT of user_id over the window's `buys` (and `categories`)
    params: tuple = ()


@dataclass(frozen=True)
class Validation:
    """The encoder's validation seeds and the audience multiple its epochs are compared at."""

    seeds: list[Seed]
    multiple: int


def rfm_matrix(frame: pd.DataFrame, top_level: int) -> np.ndarray:
    return np.column_stack(
        [
            frame["recency_days"].astype("float64"),
            np.log1p(frame[f"n_events_{WINDOW_DAYS}d"].astype("float64").fillna(0)),
            np.log1p(frame[f"n_level_{top_level}_{WINDOW_DAYS}d"].astype("float64").fillna(0)),
        ]
    )


def window(
    wh: Warehouse, users: pd.Series, lo: date, hi: date, top_level: int, has_categories: bool
) -> duckdb.DuckDBPyConnection:
    """A connection with ``population`` (user_id, pos), ``events`` (every (user, item, day) of days lo..hi, any
    behaviour), ``buys`` (the purchases among them) and, where the source has them, the items' ``categories``: what
    a seed's behaviour is a query over."""
    facts = wh.mart_export("fct_interactions") / "*.parquet"
    con = duckdb.connect()
    con.register("population", pd.DataFrame({"user_id": users, "pos": np.arange(len(users))}))
    con.execute(
        f"create table events as select f.user_id, f.item_id, f.ds, f.max_level_reached from read_parquet('{facts}') f "
        "where f.ds between ? and ?",
        [lo, hi],
    )
    con.execute(f"create table buys as select user_id, item_id, ds from events where max_level_reached = {top_level}")
    if has_categories:
        attrs = wh.bronze_item_attributes() / "*.parquet"
        con.execute(f"create table categories as select item_id, category, subcategory from read_parquet('{attrs}')")
    return con


def doers(con: duckdb.DuckDBPyConnection, query: str, params: tuple = ()) -> np.ndarray:
    """The population positions of the consumers ``query`` selects, in order."""
    sql = f"select distinct p.pos from ({query}) s join population p using (user_id) order by p.pos"
    return np.array([r[0] for r in con.execute(sql, list(params)).fetchall()], dtype=np.int64)


ITEM_BUYERS = "select user_id from buys where item_id = ?"
ITEM_VISITORS = "select user_id from events where item_id = ?"  # any behaviour: clicked, collected, carted or bought
CATEGORY_BUYERS = "select b.user_id from buys b join categories c using (item_id) where c.category = ?"
SUBCATEGORY_BUYERS = "select b.user_id from buys b join categories c using (item_id) where c.subcategory = ?"
HEAVY_BUYERS = (
    "select user_id from (select user_id, count(distinct ds) d from buys group by 1) "
    "qualify d >= quantile_disc(d, 0.9) over ()"
)


def seeds(
    wh: Warehouse, users: pd.Series, day: date, top_level: int, has_categories: bool, more: int = 0
) -> tuple[list[Seed], Validation, list[Seed]]:
    """(reported seeds, validation seeds of the encoder, ``more`` seeds judged by the prospective measure only).

    The prospective measure judges a seed only where it has enough converters (on Tmall's 859 consumers the reported
    seeds leave three), so it takes more, each with at least 10 members: the buyers of the ``more`` items (H&M:
    subcategories) ranked after the validation seeds (9th on) and, where the source has behaviours below a purchase
    (Tmall's clicks, collects, carts), the visitors of the ``more`` most visited items, the validation items left
    out: audiences for a brand's reach."""
    con = window(wh, users, day - timedelta(days=WINDOW_DAYS - 1), day, top_level, has_categories)
    out: list[Seed] = []
    validation: list[Seed] = []
    multiple = max(MULTIPLES)

    def seed(name: str, kind: str, query: str, *params: object) -> Seed:
        return Seed(name, kind, doers(con, query, params), query, params)

    items = con.execute(
        "select item_id, count(distinct user_id) as n from buys group by item_id order by n desc, item_id"
    ).fetchall()
    chosen = [*items[:3], items[len(items) // 20], items[len(items) // 10]]  # the top three, two of middling reach
    for item, _ in chosen:
        out.append(seed(f"buyers of item {item}", "item", ITEM_BUYERS, item))
    for item, _ in items[3:8]:  # the encoder's epoch is chosen on these; none is reported
        validation.append(seed(item, "validation", ITEM_BUYERS, item))
    finest, finest_kind, finest_query = items, "item", ITEM_BUYERS  # where the later buyer seeds come from
    if has_categories:
        top = con.execute(
            "select c.category, count(distinct b.user_id) n from buys b join categories c using (item_id) "
            "where c.category is not null group by 1 order by n desc, 1 limit 2"
        ).fetchall()
        for category, _ in top:
            out.append(seed(f"buyers of category {category}", "category", CATEGORY_BUYERS, category))
        if sum(len(v.members) >= 10 for v in validation) < 3:
            # single items with too few buyers (H&M: at most 6 of 536 consumers in 90 days): the finest seeds are
            # the buyers of a subcategory (H&M product type), the top three reported, the 4th-8th for validation
            ranked = con.execute(
                "select c.subcategory, count(distinct b.user_id) n from buys b join categories c using (item_id) "
                "where c.subcategory is not null group by 1 order by n desc, 1"
            ).fetchall()
            for subcategory, _ in ranked[:3]:
                out.append(seed(f"buyers of subcategory {subcategory}", "subcategory", SUBCATEGORY_BUYERS, subcategory))
            validation = [seed(sub, "validation", SUBCATEGORY_BUYERS, sub) for sub, _ in ranked[3:8]]
            multiple = 1  # ten times a product type's buyers is nearly everyone: every epoch would score 1.0
            finest, finest_kind, finest_query = ranked, "subcategory", SUBCATEGORY_BUYERS
    out.append(seed("heavy buyers (top 10% by purchase days)", "heavy", HEAVY_BUYERS))
    reported = [s for s in out if len(s.members) >= 10]
    validation = [s for s in validation if len(s.members) >= 10]
    later: list[Seed] = []
    if more > 0:
        names = {s.name for s in reported}
        buyers = (seed(f"buyers of {finest_kind} {key}", finest_kind, finest_query, key) for key, _ in finest[8:])
        later = list(islice((s for s in buyers if len(s.members) >= 10 and s.name not in names), more))
        if top_level > 1:
            skip = {v.name for v in validation}
            visited = con.execute(
                "select item_id, count(distinct user_id) as n from events group by item_id order by n desc, item_id"
            ).fetchall()
            keys = [key for key, n in visited if n >= 10 and key not in skip][:more]
            later += [seed(f"visitors of item {key}", "visitors", ITEM_VISITORS, key) for key in keys]
    return reported, Validation(validation, multiple), later


def prospective(
    wh: Warehouse,
    users: pd.Series,
    day: date,
    days: int,
    top_level: int,
    has_categories: bool,
    seed_list: list[Seed],
    representations: dict[str, np.ndarray],
    rfm: np.ndarray,
    pairs: list[tuple[str, str]],
) -> None:
    """Each seed expanded whole, its audience of 10% of the candidates judged by who takes up the seed's behaviour in
    the ``days`` after D (the same query over those days' purchases; members of the seed do not count).

    :param pairs: (representation, the one it is compared with): the paired differences printed last."""
    later = window(wh, users, day + timedelta(days=1), day + timedelta(days=days), top_level, has_categories)
    share = SHARES[1]
    print(
        f"\nprospective: each seed expanded whole, an audience of {share:.0%} of the candidates, lift over random of "
        f"the candidates who do the seed's behaviour in the {days} days after {day} (converters):"
    )
    print(f"{'seed':<44} {'size':>6} {'conv':>5}  " + "  ".join(f"{m[:22]:>22}" for m in [*representations, "rfm"]))
    lifts: dict[str, dict[str, list[float]]] = {}
    judged: dict[str, list[float]] = {}  # every judged seed's lift per method, in seed order (paired by seed)
    for seed in seed_list:
        converters = np.setdiff1d(doers(later, seed.query, seed.params), seed.members)
        if len(converters) < 5:
            print(f"{seed.name[:44]:<44} {len(seed.members):>6} {len(converters):>5}  (under 5 converters: left out)")
            continue
        scored = {name: pu_scores(x, seed.members) for name, x in representations.items()}
        scored["rfm"] = centroid_scores(rfm, seed.members)
        found = {name: converter_lift(scores, seed.members, converters, share) for name, scores in scored.items()}
        for name, (lift, _) in found.items():
            lifts.setdefault(name, {}).setdefault(seed.kind, []).append(lift)
            judged.setdefault(name, []).append(lift)
        lifts.setdefault("ceiling", {}).setdefault(seed.kind, []).append(found["rfm"][1])  # the same for every method
        cells = "  ".join(f"{found[m][0]:>21.2f}x" for m in [*representations, "rfm"])
        print(f"{seed.name[:44]:<44} {len(seed.members):>6} {len(converters):>5}  {cells}")
    kinds = list(dict.fromkeys(seed.kind for seed in seed_list))
    print("mean per seed kind and over all seeds:")
    for method, per_kind in sorted(lifts.items(), key=lambda kv: kv[0] == "ceiling"):
        every = [x for kind in kinds for x in per_kind.get(kind, [])]
        cells = "  ".join(f"{kind} {np.mean(per_kind[kind]):.2f}x" for kind in kinds if kind in per_kind)
        print(f"  {method:<38} {cells}  all {np.mean(every):.2f}x")
        record_figure(
            "lookalike",
            f"prospective lift at {share:.0%} of the candidates, {method}",
            round(float(np.mean(every)), 2),
            "x random",
            f"{wh.source}, {len(users):,} consumers on {day}, converters over the next {days} days",
        )
    if not judged:
        return
    n = len(judged["rfm"])
    draws = np.random.default_rng(0).integers(0, n, (10_000, n))
    print(f"the audiences' representation minus each baseline, mean over the {n} judged seeds [95% bootstrap, seeds]:")
    baselines = [(m, other) for m in representations if m.endswith("+features") for other in ("user_features", "rfm")]
    for name, other in baselines + pairs:
        diff = np.array(judged[name]) - np.array(judged[other])
        lo, hi = np.percentile(diff[draws].mean(axis=1), [2.5, 97.5])
        print(f"  {name} - {other:<13} {diff.mean():+.2f}x [{lo:+.2f}, {hi:+.2f}]")


def encoder_embeddings(
    settings: Settings,
    wh: Warehouse,
    day: date,
    users: pd.Series,
    validation: Validation,
    objective: str,
    seed: int,
    attributes: bool,
    epochs: int,
) -> np.ndarray:
    """The consumer encoder's embeddings of the population, trained on every consumer's sequence as of D (with the
    items' and consumers' attributes as inputs, as the nightly encoder has them, unless ``attributes`` is off)."""
    from training import consumer_encoder as ce
    from training.trainer import pick_device

    adapter = load_adapter(settings.source)
    data = ce.encode(
        ce.latest_sequences(wh.silver_sequences(), day),
        settings.pipeline.sequence_length,
        item_attributes=ce.item_attribute_frame(wh, attributes and adapter.item_attributes is not None),
        consumer_attributes=ce.consumer_attribute_frame(wh, attributes and adapter.user_attributes is not None),
    )
    rows = pd.Series(np.arange(len(data.user_ids)), index=data.user_ids).reindex(users.to_numpy())
    if rows.isna().any():
        raise SystemExit(f"{int(rows.isna().sum())} consumers of user_features have no sequence on {day}")
    take = rows.to_numpy(dtype=np.int64)
    device, _ = pick_device(settings.training.device)
    encoder_settings = ce.EncoderSettings(objective=objective, seed=seed, epochs=epochs)
    trained = ce.train(
        data,
        adapter.max_level,
        encoder_settings,
        device,
        lambda e: validation_recall(e[take], [v.members for v in validation.seeds], validation.multiple),
    )
    described = ", ".join(f"{k} {len(v)}" for k, v in data.attribute_values.items() if v) or "none"
    best = max((h["validation"] for h in trained.history), default=np.nan)  # no epoch: the untrained encoder
    print(
        f"encoder {objective} seed {seed} (attribute values: {described}): {len(data.user_ids):,} consumers, "
        f"{len(data.vocabulary):,} items, "
        f"best epoch {trained.best_epoch} of {encoder_settings.epochs} "
        f"(validation recall@{validation.multiple}x {best:.3f}), "
        f"{trained.seconds:.0f}s on {device}"
    )
    return trained.embeddings[take].astype(np.float64)


def variant_name(objective: str, epochs: int, seed: int | None, attributes: bool) -> str:
    """encoder:<objective>[/untrained | /<n>-epochs][/<seed>][/no-attributes]"""
    trained = "" if epochs == ENCODER_EPOCHS else "/untrained" if epochs == 0 else f"/{epochs}-epochs"
    return (
        f"encoder:{objective}{trained}"
        + ("" if seed is None else f"/{seed}")
        + ("" if attributes else "/no-attributes")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warehouse", type=Path, required=True, help="warehouse root with the marts exported")
    parser.add_argument("--day", type=date.fromisoformat, help="day D (default: user_features' last day)")
    parser.add_argument("--repeats", type=int, default=5, help="random hides per seed (default 5)")
    parser.add_argument(
        "--encoder",
        default="masked,contrastive,both",
        help="consumer encoder objectives to train and compare ('' none)",
    )
    parser.add_argument("--encoder-seeds", default="0", help="training seeds per objective (default 0)")
    parser.add_argument(
        "--encoder-epochs",
        default=str(ENCODER_EPOCHS),
        help=f"comma-separated encoder epochs per objective (default {ENCODER_EPOCHS}, the nightly encoder's); 0 "
        "scores the untrained encoder (random item vectors through a random transformer): '8,0' measures what "
        "training adds",
    )
    parser.add_argument(
        "--prospective",
        type=int,
        metavar="DAYS",
        help="also judge each whole seed's audience by who takes up its behaviour in the DAYS after D (D defaults "
        "to the mart's last day minus DAYS)",
    )
    parser.add_argument(
        "--prospective-seeds",
        type=int,
        default=10,
        metavar="N",
        help="with --prospective, also judge the buyers of N more items (subcategories where single items are too "
        "sparse), ranked after the encoder's validation seeds, and, where the source has behaviours below a "
        "purchase, the visitors of the N most visited items (default 10; 0: the reported seeds only)",
    )
    parser.add_argument(
        "--attributes",
        choices=("on", "off", "both"),
        default="on",
        help="the encoder with the items' and consumers' attributes (on, the nightly encoder), without them (off), "
        "or both side by side (default on)",
    )
    args = parser.parse_args(argv)

    settings = load_settings().with_overrides(warehouse_root=args.warehouse.resolve())
    adapter = load_adapter(settings.source)
    wh = Warehouse.of(settings)
    t0 = time.time()
    day = args.day
    if day is None and args.prospective:
        last, _ = population(settings)
        day = last - timedelta(days=args.prospective)
    day, frame = population(settings, day)
    features, columns = feature_matrix(frame)
    rfm = rfm_matrix(frame, adapter.max_level)
    more = args.prospective_seeds if args.prospective else 0
    seed_list, validation, later = seeds(
        wh, frame["user_id"], day, adapter.max_level, adapter.item_attributes is not None, more
    )
    representations = {"user_features": features}
    pairs = []  # each encoder variant's audiences beside the first variant's, same encoder seed and attributes
    variants = [(o, int(e)) for o in args.encoder.split(",") if o for e in args.encoder_epochs.split(",")]
    for objective, epochs in variants:
        for seed in (int(x) for x in args.encoder_seeds.split(",")):
            for attributes in {"on": (True,), "off": (False,), "both": (True, False)}[args.attributes]:
                embeddings = encoder_embeddings(
                    settings, wh, day, frame["user_id"], validation, objective, seed, attributes, epochs
                )
                seeded = seed if "," in args.encoder_seeds else None
                name = variant_name(objective, epochs, seeded, attributes)
                representations[name] = embeddings
                # the embedding beside the consumer's counts: what the sequence adds to user_features
                representations[f"{name}+features"] = np.hstack([embeddings, features])
                if (objective, epochs) != variants[0]:
                    pairs.append((f"{name}+features", f"{variant_name(*variants[0], seeded, attributes)}+features"))
    print(
        f"{adapter.name}, day {day}: {len(frame):,} consumers, {len(columns)} user_features columns, "
        f"{len(seed_list)} seeds, {args.repeats} hides each ({time.time() - t0:.1f}s to load)"
    )
    header = f"{'seed':<44} {'size':>6} {'method':<38}" + "".join(f" {f'R@{m}x':>7}" for m in MULTIPLES)
    header += f" {'lift@10x':>9}" + "".join(f" {f'R@{share:.0%}':>7}" for share in SHARES)
    print(header + f" {f'lift@{SHARES[1]:.0%}':>9}")
    summary: dict[str, list[float]] = {}
    share_lifts: dict[str, dict[str, list[float]]] = {}
    top, share = max(MULTIPLES), SHARES[1]
    for seed in seed_list:
        runs: dict[str, list[HiddenRecall]] = {name: [] for name in [*representations, "rfm"]}
        by_share: dict[str, list[dict[float, float]]] = {name: [] for name in [*representations, "rfm"]}
        for repeat in range(args.repeats):
            visible, hidden = split_seed(seed.members, np.random.default_rng(repeat))
            scored = {name: pu_scores(x, visible) for name, x in representations.items()}
            scored["rfm"] = centroid_scores(rfm, visible)
            for name, scores in scored.items():
                runs[name].append(hidden_recall(scores, visible, hidden))
                by_share[name].append(share_recall(scores, visible, hidden))
        rows = {method: [r.recall for r in found] for method, found in runs.items()}
        rows["random"] = [r.random for r in runs["rfm"]]  # the exact expectation at the same sizes
        by_share["random"] = [dict(zip(SHARES, SHARES, strict=True))] * args.repeats
        chance = [r.random[top] for r in runs["rfm"]]
        # the best lift any ranking could reach at the share: every hidden member first (below 1 / share when the
        # hidden members outnumber the audience)
        best = [r.best_at_share(share) / share for r in runs["rfm"]]
        share_lifts.setdefault("ceiling", {}).setdefault(seed.kind, []).append(float(np.mean(best)))
        for method, recalls in rows.items():
            mean = {m: float(np.mean([r[m] for r in recalls])) for m in MULTIPLES}
            spread = float(np.std([r[top] for r in recalls]))
            lift = float(np.mean([r[top] / c for r, c in zip(recalls, chance, strict=True)]))
            at_share = {s: float(np.mean([r[s] for r in by_share[method]])) for s in SHARES}
            summary.setdefault(method, []).append(mean[top])
            share_lifts.setdefault(method, {}).setdefault(seed.kind, []).append(at_share[share] / share)
            cells = "".join(f" {mean[m]:>7.3f}" for m in MULTIPLES)
            cells += f" {lift:>8.2f}x" + "".join(f" {at_share[s]:>7.3f}" for s in SHARES)
            print(
                f"{seed.name[:44]:<44} {len(seed.members):>6} {method:<38}{cells} {at_share[share] / share:>8.2f}x"
                f"  (+-{spread:.3f} at {top}x)"
            )
    print(f"mean recall@{top}x over seeds: " + ", ".join(f"{m} {np.mean(v):.3f}" for m, v in summary.items()))
    kinds = list(dict.fromkeys(seed.kind for seed in seed_list))
    print(
        f"\nlift over random in an audience of {share:.0%} of the population, mean per seed kind "
        f"({', '.join(kinds)}) and over all seeds:"
    )
    for method, per_kind in sorted(share_lifts.items(), key=lambda kv: kv[0] == "ceiling"):
        every = [x for kind in kinds for x in per_kind[kind]]
        cells = "  ".join(f"{kind} {np.mean(per_kind[kind]):.2f}x" for kind in kinds)
        print(f"  {method:<38} {cells}  all {np.mean(every):.2f}x (lowest seed {min(every):.2f}x)")
        data = f"{adapter.name}, {len(frame):,} consumers on {day}, {len(seed_list)} seeds"
        record_figure(
            "lookalike",
            f"lift at {share:.0%} of the population, {method}",
            round(float(np.mean(every)), 2),
            "x random",
            data,
            lowest=round(min(every), 2),
        )
    if args.prospective:
        categories = adapter.item_attributes is not None
        users = frame["user_id"]
        judged = seed_list + later
        prospective(
            wh, users, day, args.prospective, adapter.max_level, categories, judged, representations, rfm, pairs
        )
    print(f"done in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
