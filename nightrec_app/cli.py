"""`nightrec`: the command line of the nightly recommendation warehouse.

Run `nightrec <command> --help` for details. Every command reads the profile (conf/profiles/, NIGHTREC_PROFILE)
and the source (conf/sources/, NIGHTREC_SOURCE); flags override single values.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from nightrec.adapters import days_between, load_adapter
from nightrec.config import SET_VARIABLE, Settings, load_settings
from nightrec.context import RunContext
from nightrec.errors import NightrecError, RunStopped
from nightrec.logs import show_progress
from nightrec.warehouse import Warehouse
from nightrec_app.orchestration import BOOTSTRAP_DAG, NIGHTLY_DAG

EPILOG = """\
The main job end to end on the bundled Tmall data (what `make demo` runs):
  nightrec demo
Step by step:
  nightrec bootstrap                     # history before the source's nightly_start, one Spark pass per job
  nightrec nightly --day 2014-08-14      # the nightly DAG for one day (Airflow logical date = day + 1)
  nightrec backfill --start 2014-08-14 --end 2014-08-15   # the nightly DAG for each day, inclusive
  nightrec status                        # per-day reconciliation: raw = bronze + quarantine + re-delivered
  nightrec report --day 2014-08-15       # one day's run: quality, features, models and their gate, top-k
  nightrec airflow dags list             # any airflow command, in the project's environment
"""


def _settings(args: argparse.Namespace) -> Settings:
    overrides = [os.environ.get(SET_VARIABLE, ""), *(getattr(args, "set", None) or [])]
    env = {**os.environ, SET_VARIABLE: "; ".join(o for o in overrides if o)}  # --set after the environment's: it wins
    settings = load_settings(args.profile, env=env)
    changes: dict[str, object] = {}
    if args.warehouse:
        changes["warehouse_root"] = Path(args.warehouse).resolve()
    if args.source:
        changes["source"] = args.source
    return settings.with_overrides(**changes) if changes else settings


def _context(args: argparse.Namespace) -> RunContext:
    """The command's context over the source's whole history (commands that take a range narrow it themselves)."""
    return RunContext.of(_settings(args))


def _logical_date(day: date) -> str:
    # The run that processes day D has its data interval [D, D+1) and logical date D+1 (Airflow 3).
    return f"{(day + timedelta(days=1)).isoformat()}T00:00:00+00:00"


def cmd_land(args: argparse.Namespace) -> int:
    from nightrec.landing import land_file, replay

    ctx = _context(args)
    adapter, wh = ctx.adapter, ctx.warehouse
    if args.file:
        if not args.ds:
            raise NightrecError("--file needs --ds (the delivery day)")
        res = land_file(adapter, wh, args.ds, Path(args.file))
        print(f"{adapter.name} ds={res.ds} {res.file}: {res.status} ({res.rows} rows)")
        return 0
    start = args.start or adapter.history_start
    end = (args.end + timedelta(days=1)) if args.end else adapter.history_end + timedelta(days=1)
    report = replay(adapter, wh, start, end, Path(args.bundled) if args.bundled else None)
    print(report.summary())
    return 0


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from nightrec_app.airflow_env import ensure_metadata_db

    ctx = _context(args)
    s, adapter = ctx.settings, ctx.adapter
    start = args.start or adapter.history_start
    end = (args.end + timedelta(days=1)) if args.end else adapter.nightly_start
    last = end - timedelta(days=1)
    if end <= start:  # refused here, not 30 s later in spark-submit's argument check
        given = (
            f"--end {args.end}"
            if args.end
            else f"no --end (default: the day before nightly_start {adapter.nightly_start})"
        )
        raise NightrecError(
            f"bootstrap range is empty: --start {start} and {given}. --end is inclusive and must be on or after "
            f"--start; for one day, give the same day to both."
        )
    if start < adapter.history_start or last > adapter.history_end:
        raise NightrecError(
            f"bootstrap range [{start}, {last}] leaves {adapter.name}'s history [{adapter.history_start}, "
            f"{adapter.history_end}] (conf/sources/{adapter.name}.yaml, key history): nothing is delivered there."
        )
    ensure_metadata_db(s)
    ensure_manifest()
    conf = json.dumps({"start": start.isoformat(), "end": end.isoformat()})
    print(f"bootstrap {adapter.name}: days [{start}, {end}) through the `bootstrap` DAG", flush=True)
    _run_dag(s, ["dags", "test", BOOTSTRAP_DAG, "-c", conf], days_between(start, end), args.quiet)
    return 0


def _run_dag(s: Settings, airflow_args: list[str], days: list[date], quiet: bool) -> None:
    """One `airflow dags test` over ``days``. If a signal stopped it, or it ended leaving attempts marked running
    (it died before a task recorded the outcome), those attempts are recorded as stopped, with why, so `status`
    shows neither a dead run as running nor a terminated task as a failure of its own."""
    from nightrec.run_manifest import stop_attempts
    from nightrec.storage import utc_now_iso
    from nightrec_app.airflow_env import run_airflow

    since = utc_now_iso()
    try:
        run_airflow(s, airflow_args, quiet=quiet)
    except NightrecError as exc:
        why = str(exc).splitlines()[0]
        warehouse = RunContext.of(s).warehouse
        if stopped := stop_attempts(warehouse, days, why, since, signalled=isinstance(exc, RunStopped)):
            print(f"run stopped: {len(stopped)} day(s) recorded as stopped ({stopped[0]} .. {stopped[-1]})")
            from nightrec.notify import notify

            notify(s, "run_stopped", days=[str(d) for d in stopped], why=why)
        raise


def ensure_manifest() -> None:
    from nightrec.dbt_runner import ensure_manifest as build

    build()


def _nightly_days(s: Settings, days: list[date], quiet: bool = True) -> None:
    from nightrec_app.airflow_env import ensure_metadata_db

    adapter = RunContext.of(s).adapter
    outside = [d for d in days if not adapter.history_start <= d <= adapter.history_end]
    if outside:
        raise NightrecError(
            f"Day(s) {', '.join(map(str, outside[:3]))} lie outside {adapter.name}'s delivered history "
            f"[{adapter.history_start}, {adapter.history_end}]: there is nothing to process."
        )
    early = [d for d in days if d < adapter.nightly_start]
    if early:
        # the nightly DAG starts at nightly_start: Airflow would create no task for an earlier day and `dags test`
        # would end "successfully" having done nothing
        raise NightrecError(
            f"Day(s) {', '.join(map(str, early[:3]))} come before {adapter.name}'s nightly_start "
            f"({adapter.nightly_start}): the nightly DAG starts there, and the days before it are the bootstrap's. "
            f"Run `nightrec bootstrap --start {early[0]} --end {early[-1]}`, or move nightly_start in "
            f"conf/sources/{adapter.name}.yaml."
        )
    first = adapter.first_night(s.airflow.first_night)
    held = [d for d in days if d < first]
    if held:
        raise NightrecError(
            f"Day(s) {', '.join(map(str, held[:3]))} come before the nightly DAG's first night ({first}, set by "
            "airflow.first_night): Airflow would create no task for them. Move or unset airflow.first_night."
        )
    ensure_metadata_db(s)
    ensure_manifest()
    for day in days:
        t0 = time.time()
        print(f"nightly {s.source}: day {day} (logical date {_logical_date(day)})", flush=True)
        lookback = [day - timedelta(days=n) for n in range(s.pipeline.lookback_days, -1, -1)]
        _run_dag(s, ["dags", "test", NIGHTLY_DAG, _logical_date(day)], lookback, quiet)
        print(f"nightly {s.source}: day {day} done in {time.time() - t0:.0f}s", flush=True)


def cmd_nightly(args: argparse.Namespace) -> int:
    s = _settings(args)
    day = args.day or s.run_date
    if day is None:
        raise NightrecError("Give the day to process: --day YYYY-MM-DD (or NIGHTREC_RUN_DATE)")
    _nightly_days(s, [day], args.quiet)
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    s = _settings(args)
    if args.end < args.start:
        raise NightrecError(f"--end ({args.end}) is before --start ({args.start})")
    days = days_between(args.start, args.end + timedelta(days=1))
    if args.resume:
        days = _unfinished(s, days)
    _nightly_days(s, days, args.quiet)
    return 0


def _unfinished(s: Settings, days: list[date]) -> list[date]:
    """The days of a backfill still to run: from the first whose own nightly run did not succeed on. A night builds
    on the nights before it (the consumer encoder continues from them, candidates read their segments), so every day
    after a redone one is redone as well."""
    from nightrec.run_manifest import own_run

    warehouse = RunContext.of(s).warehouse
    done = 0
    while done < len(days):
        run = own_run(warehouse, days[done]) or {}
        if run.get("dag_id") != NIGHTLY_DAG or run.get("state") != "success":
            break
        print(f"nightly {s.source}: day {days[done]} skipped, its night succeeded in {run['run_id']} (--resume)")
        done += 1
    if done == len(days):
        print(f"nightly {s.source}: every night of the range succeeded already; nothing to resume")
    return days[done:]


def cmd_status(args: argparse.Namespace) -> int:
    from nightrec.completeness import OUTPUTS, complete_through
    from nightrec.run_manifest import read_run_manifest, reconciles
    from nightrec.run_report import attempt_mark, error_line, outside_message, quality_marks

    ctx = _context(args)
    adapter, wh = ctx.adapter, ctx.warehouse
    start = args.start or adapter.history_start
    end = args.end or adapter.history_end
    print(
        f"{'ds':<11} {'raw':>7} {'bronze':>7} {'quar.':>6} {'redel.':>6} {'ok':>3} {'seq.users':>9}  "
        f"{'quality raw/bronze/marts':<24}  {'latest attempt':<24}  quarantine"
    )
    missing, failed = 0, []
    for ds in days_between(start, end + timedelta(days=1)):
        doc = read_run_manifest(wh, ds)
        st = (doc or {}).get("stages", {})
        ing, seq = st.get("ingest_events"), st.get("build_sequences")
        attempt = (doc or {}).get("attempt")
        mark = attempt_mark(attempt)
        if attempt is not None and attempt.get("state") in ("failed", "stopped"):
            failed.append((ds, attempt))
        if not ing:
            missing += 1
            if args.all or attempt is not None:  # a day whose run failed before ingest is always listed
                print(f"{ds!s:<11} {'(not ingested)':<48}  {quality_marks(st):<24}  {mark:<24}")
            continue
        ok = reconciles(ing)
        print(
            f"{ds!s:<11} {ing['raw_rows']:>7} {ing['bronze_rows']:>7} {ing['quarantined_rows']:>6} "
            f"{ing['redelivered_rows']:>6} {'yes' if ok else 'NO':>3} {(seq or {}).get('users', '-'):>9}  "
            f"{quality_marks(st):<24}  {mark:<24}  {ing['quarantine_reasons'] or ''}"
            + (f" forgotten on request: {ing['forgotten_rows']}" if ing.get("forgotten_rows") else "")
        )
    if missing:
        print(f"({missing} day(s) in [{start}, {end}] not ingested yet{'' if args.all else '; --all lists them'})")
    for edge in (adapter.history_start, adapter.history_end):  # the history file's rows no day holds (#24)
        outside = ((read_run_manifest(wh, edge) or {}).get("stages", {}).get("land") or {}).get("outside_history")
        if outside:
            print(outside_message(adapter.name, outside, (adapter.history_start, adapter.history_end)))
    for ds, attempt in failed:
        task = attempt.get("failed_task")
        how = f"FAILED in {task}" if attempt["state"] == "failed" else f"was STOPPED (in {task or 'no task'})"
        print(f"{ds}: the latest run {attempt['run_id']} {how}: {error_line(attempt)}")
    if failed:
        print("(counts and checks above are the last recorded; `nightrec report --day D` says which run wrote each)")
    complete = {output: complete_through(wh, output) for output in OUTPUTS}
    print(
        "complete through: "
        + ", ".join(f"{output} {day or 'never published'}" for output, day in complete.items())
        + f" ({wh.completeness('<output>')})"
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from nightrec.run_report import last_reported_day, report

    wh = _context(args).warehouse
    day = args.day or last_reported_day(wh)
    if day is None:
        raise NightrecError(f"No run manifests under {wh.runs()} yet: run `nightrec demo` (or the nightly DAG) first")
    print(report(wh, day))
    return 0


def cmd_retention(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from nightrec import retention
    from nightrec.config import MIN_RETENTION_DAYS
    from nightrec.run_report import last_reported_day

    ctx = _context(args)
    s = ctx.settings
    if args.days is not None:
        if 0 < args.days < MIN_RETENTION_DAYS:
            raise NightrecError(f"--days must be 0 (off) or at least {MIN_RETENTION_DAYS}: {retention.WHY_A_FLOOR}")
        s = s.with_overrides(retention=replace(s.retention, days=args.days))
    day = args.day or last_reported_day(ctx.warehouse) or date.today()
    if s.retention.days <= 0:
        print("retention is off (retention.days = 0): nothing is removed; give --days N or set retention.days")
        return 0
    summary = retention.apply(s, day, dry_run=not args.apply)
    verb = "removed" if args.apply else "would remove (run again with --apply)"
    print(f"retention {s.retention.days} days on {day}: keeps everything from {summary['cutoff']} on; {verb}:")
    for zone, names in summary["paths"].items():
        print(f"  {zone}: {len(names)}  " + ", ".join(names[:6]) + (" ..." if len(names) > 6 else ""))
    if not summary["paths"]:
        print("  nothing")
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    from nightrec_app import tasks

    ids = list(args.user or [])
    if args.file:
        path = Path(args.file)
        if not path.is_file():
            raise NightrecError(f"--file {path}: no such file (one user id per line)")
        ids += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    ctx = _context(args)
    summary = tasks.forget_users(ctx, ids, dry_run=args.dry_run, check=False)
    verb = "would remove (run again without --dry-run)" if args.dry_run else "removed"
    print(f"forget {summary['users']} user(s) of {ctx.settings.source} in {ctx.warehouse.root}: {verb}")
    for zone, rows in summary["removed"].items():
        print(f"  {zone:<48} {rows:>8,} rows")
    if not summary["removed"]:
        print("  nothing")
    if summary["not_found"]:
        print(f"not found in any file or table: {', '.join(summary['not_found'])}")
    if not args.dry_run:
        print(f"recorded in {ctx.warehouse.forgotten_users()} (by key): later deliveries of them are left out")
    if summary["unreconciled_days"]:
        print(f"NOT RECONCILED after the removal: {', '.join(summary['unreconciled_days'])} (`nightrec status`)")
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    ctx = _context(args)
    s, adapter, wh = ctx.settings, ctx.adapter, ctx.warehouse
    t0 = time.time()
    print(
        f"== nightrec demo: source {adapter.name} ({adapter.description})\n"
        f"   warehouse {s.warehouse_root}, Spark {s.spark.master}, Airflow home {s.airflow.home}",
        flush=True,
    )
    args.start, args.end = None, None
    cmd_bootstrap(args)
    _nightly_days(s, days_between(adapter.nightly_start, adapter.history_end + timedelta(days=1)))
    print(f"\n== done in {time.time() - t0:.0f}s. Reconciliation of the last days:")
    args.start, args.end, args.all = adapter.nightly_start - timedelta(days=3), adapter.history_end, False
    cmd_status(args)
    from nightrec.run_report import report

    print(f"\n== The last night's run (`nightrec report --day {adapter.history_end}`):")
    print(report(wh, adapter.history_end))
    print(
        "\nWhere to look:\n"
        f"  analysts' database   {wh.analyst_db()}  (`nightrec sql --file docs/analyst_queries.sql`)\n"
        f"  dbt docs             {wh.dbt_docs()}/index.html\n"
        f"  marts as Parquet     {wh.mart_exports()}/\n"
        f"  zones                {wh.bronze_events()}, bronze/quarantine, silver/sequences\n"
        f"  run report           {wh.run_pages()}/index.html  (`nightrec report --day D`; `nightrec status`)\n"
        f"  data quality         {wh.data_docs()}/index.html  (Great Expectations Data Docs)\n"
        f"  features             {wh.feast()}/  (`nightrec feast lookup --user U --item I`, `nightrec feast serve`)\n"
        f"  models and ranker    {wh.models()}/<model>/<day>/metrics.json  (every list beside the baselines; the\n"
        "                       night's decision: models/ranker/<day>/metrics.json `lists`; `nightrec train` reruns)\n"
        f"  candidates           {wh.root}/candidates/ds=<day>/anchor=<A>/  (what each list was ranked from)\n"
        f"  top-k lists          {wh.serving_topk()}/current  (`nightrec topk show --user U`; mart topk_current;\n"
        "                       `nightrec feast lookup --service topk --user U`)\n"
        f"  consumer segments    {wh.root}/segments/  (`nightrec segments show [--segment S]`; marts\n"
        "                       segment_membership, segment_profiles, lookalike_audiences;\n"
        "                       `nightrec feast lookup --service segments --user U`)"
    )
    return 0


def cmd_dbt(args: argparse.Namespace) -> int:
    from nightrec.dbt_runner import run_dbt

    s = _settings(args)
    end = args.end + timedelta(days=1) if args.end else None
    run_dbt(s, args.dbt_args or ["build"], target=args.target, start=args.start, end=end)
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    import duckdb

    from nightrec.marts_publish import split_queries

    s = _settings(args)
    path = Warehouse.of(s).analyst_db()
    if not path.is_file():
        raise NightrecError(f"No analysts' database at {path} yet: run `nightrec demo` (or the nightly DAG) first")
    queries = split_queries(Path(args.file).read_text()) if args.file else [args.query]
    failed = []
    with duckdb.connect(str(path), read_only=True) as con:
        for i, q in enumerate(queries, 1):
            if args.file:
                print(f"\n{q.strip()}")
            try:
                print(con.sql(q).df().to_string(max_rows=args.max_rows, index=False))
            except duckdb.Error as exc:  # a file's queries are independent: say which failed and go on
                first = str(exc).strip().splitlines()[0]
                print(f"query {i} failed: {first}", file=sys.stderr)
                failed.append(i)
    if failed:
        raise NightrecError(
            f"{len(failed)} of {len(queries)} queries failed ({', '.join(map(str, failed))}). A table that does not "
            "exist yet is published by a later task (marts.topk_current by publish_topk, the segment marts by the "
            'segments group): run the nightly DAG first; `nightrec sql "show all tables"` lists what there is.'
        )
    return 0


def cmd_feast(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from nightrec import feature_store

    s = _settings(args)
    if args.variant:
        s = s.with_overrides(feast=replace(s.feast, variant=args.variant))
    if args.action == "apply":
        feature_store.apply(s)
    elif args.action == "materialize":
        if not (args.start and args.end):
            raise NightrecError("feast materialize needs --start and --end (data days, inclusive)")
        feature_store.materialize(s, args.start, args.end + timedelta(days=1))
    elif args.action == "lookup":
        if not args.user:
            raise NightrecError("feast lookup needs --user (and optionally --item)")
        row = feature_store.online_features(s, [{"user_id": args.user, "item_id": args.item or ""}], args.service)
        for name, values in sorted(row.items()):
            print(f"{name:<45} {values[0]}")
    else:  # serve: Feast's HTTP feature server on this repository and variant
        feature_store.use_settings(s)  # checks the variant's servers are given, like every other action
        env = dict(os.environ)
        cmd = [
            str(Path(sys.executable).parent / "feast"),
            "-c",
            str(feature_store.FEATURE_REPO),
            "-f",
            str(feature_store.store_yaml(s)),
            "serve",
            "--host",
            args.host,
            "--port",
            str(args.port),
            "--no-access-log",
            "--max-requests",  # the default restarts the worker every ~1000 requests (docs/architecture.md)
            "10000000",
        ]
        print(f"feature server on http://{args.host}:{args.port} (POST /get-online-features)", flush=True)
        # exec, not a child: a supervisor's SIGTERM (Airflow, systemd, a test) must reach the server itself; as a child
        # of this process it outlived a terminated wrapper and kept serving its port
        os.execve(cmd[0], cmd, env)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from training import ranker
    from training import run as training_run

    s = _settings(args)
    changes = {k: v for k, v in {"device": args.device, "epochs": args.epochs}.items() if v is not None}
    if args.models:
        changes["models"] = tuple(args.models.split(","))
    if changes:
        s = s.with_overrides(training=replace(s.training, **changes))
    day = args.day or training_run.last_data_day(s)
    report = training_run.run(s, day, args.seed)
    print(f"{'model':<12} {'gate':<14} {'metric':<10} {'value':>8}  reason")
    for name, m in report["models"].items():
        gate = m["gate"]
        state = "published" if gate["publish"] else "kept champion"
        print(f"{name:<12} {state:<14} {gate['metric']:<10} {gate['new']:>8.4f}  {gate['reason']}")
    print(f"models under {Warehouse.of(s).models()}; {report['seconds']} s")
    if not s.training.ranker:
        return 0
    from nightrec.anchors import plan_for
    from spark_jobs import build_candidates
    from spark_jobs.common import build_spark

    plan = plan_for(s, RunContext.of(s).adapter.history_start, day)
    spark = build_spark(s, "build_candidates")
    try:
        build_candidates.run(spark, s, plan, day.isoformat())
    finally:
        spark.stop()
    result = ranker.run(s, day, args.seed, plan=plan)
    print(f"ranker under {result['path']}; {result['seconds']} s")
    return 0


def cmd_topk(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from nightrec import topk_publish

    s = _settings(args)
    changes = {k: v for k, v in {"k": args.k, "model": args.model}.items() if v is not None}
    if changes:
        s = s.with_overrides(topk=replace(s.topk, **changes))
    if args.action == "score":
        from spark_jobs import score_topk
        from spark_jobs.common import build_spark

        day = args.day or _last_mart_day(s)
        spark = build_spark(s, "score_topk")
        try:
            result = score_topk.run(spark, s, day)
        finally:
            spark.stop()
        if "skipped" in result:
            print(f"top-k: skipped: {result['skipped']}")
            return 0
        print(json.dumps(topk_publish.serve(s), indent=2))
    elif args.action == "rollback":
        pointer = topk_publish.rollback(s)
        print(f"top-k: rolled back to {pointer['path']}")
        print(json.dumps(topk_publish.serve(s), indent=2))
    else:  # show
        pointer = topk_publish.current(s)
        if pointer is None:
            print(f"no published top-k under {Warehouse.of(s).serving_topk()}")
            return 0
        print(json.dumps(pointer, indent=2))
        if args.user:
            import duckdb

            files = Warehouse.of(s).serving_topk() / "current" / "*.parquet"
            rows = duckdb.sql(
                f"select rank, item_id, score, source, sources from read_parquet('{files}') where user_id = ? "
                "order by rank",
                params=[args.user],
            ).fetchall()
            for rank, item, score, source, sources in rows[: args.limit]:
                print(f"{rank:>4}  {item:<24} {score:10.4f}  {source:<12} {','.join(sources or [])}")
            if not rows:
                print(f"user {args.user!r} has no list in {pointer['path']}")
    return 0


def _last_mart_day(s: Settings) -> date:
    import duckdb

    files = Warehouse.of(s).mart_export("dim_users") / "*.parquet"
    return duckdb.sql(f"select max(last_event_ds) from read_parquet('{files}')").fetchall()[0][0]


def cmd_audience(args: argparse.Namespace) -> int:
    from nightrec import audiences
    from nightrec.seeds import predicate_users

    s = _settings(args)
    if bool(args.seed_sql) == bool(args.seed_file):
        raise NightrecError("Give the seed as exactly one of --seed-sql or --seed-file")
    if args.seed_sql:
        seed_ids = predicate_users(Warehouse.of(s).analyst_db(), args.seed_sql, args.timeout)
    else:
        seed_ids = Path(args.seed_file).read_text().split()
    audience = audiences.build(s, seed_ids, args.size, args.day)
    rows = audience.rows
    print(f"population: user_features on {audience.day} ({audience.representation}); seed: {audience.seed.summary()}")
    if audience.evaluation:
        print(f"evaluation (30% of the seed hidden, {audiences.HIDES} times): recall of the hidden members")
        for multiple, (recall, chance) in audience.evaluation.items():
            lift = f"{recall / chance:.2f}x random" if chance else "-"
            print(f"  audience {multiple:>2}x the seed: {recall:.3f} (random {chance:.3f}, {lift})")
        for share, (recall, best) in audience.at_share.items():
            print(
                f"  audience of {share:.0%} of the consumers: {recall:.3f} (random {share:.3f}, "
                f"{recall / share:.2f}x random; the best possible {best:.3f})"
            )
    expanded = rows[~rows["is_seed"]]
    print(f"audience: {len(expanded):,} consumers beyond the seed ({args.size}x); the first {min(10, len(expanded))}:")
    print(expanded.head(10).to_string(index=False))
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        (rows.to_csv(out, index=False) if out.suffix == ".csv" else rows.to_parquet(out, index=False))
        print(f"wrote {len(rows):,} rows (seed and audience: user_id, score, rank, is_seed) to {out}")
    return 0


def cmd_segments(args: argparse.Namespace) -> int:
    from nightrec.run_manifest import read_run_manifest
    from nightrec.segments import read_profiles

    wh = Warehouse.of(_settings(args))
    night, profiles = read_profiles(wh.segments("profiles"), args.day)
    run = (read_run_manifest(wh, night) or {}).get("stages", {}).get("segments", {})
    ari = run.get("ari")
    print(
        f"segments of night {night}: {int(profiles['consumers'].sum()):,} consumers in {len(profiles)} segments"
        + (f", silhouette {run['silhouette']:.3f} ({run.get('chosen_by', '?')})" if "silhouette" in run else "")
        + (f", ARI {ari:.3f} with {run['previous_night']}" if ari is not None else ", no earlier night to compare")
    )
    if args.segment is None:
        print(f"{'id':>4} {'consumers':>9} {'share':>6} {'events':>7} {'top lvl':>7} {'recency':>7}  label")
        for r in profiles.itertuples():
            print(
                f"{r.segment_id:>4} {r.consumers:>9,} {r.share:>6.1%} {r.mean_events:>7.1f} {r.top_level_share:>7.1%} "
                f"{r.recency_days:>6.1f}d  {r.label}"
            )
        print("`nightrec segments show --segment ID` lists a segment's most over-represented items")
        return 0
    chosen = profiles[profiles["segment_id"] == args.segment]
    if chosen.empty:
        raise NightrecError(f"No segment {args.segment} on {night}; segments: {profiles['segment_id'].tolist()}")
    r = chosen.iloc[0]
    everyone = profiles["consumers"].sum()

    def overall(column: str) -> float:
        return float((profiles[column] * profiles["consumers"]).sum() / everyone)

    print(f"segment {r['segment_id']}: {r['label']}")
    print(f"  consumers        {r['consumers']:,} ({r['share']:.1%} of everyone)")
    for column, name in (
        ("mean_events", "mean events"),
        ("mean_active_days", "active days"),
        ("top_level_share", "reached top level"),
        ("recency_days", "days since last"),
    ):
        print(f"  {name:<16} {r[column]:>8.2f}   (everyone {overall(column):.2f})")
    shares = ", ".join(f"level {i + 1} {v:.1%}" for i, v in enumerate(r["level_shares"]))
    print(f"  events by level  {shares}")
    print(f"  {'item':<14} {'name':<28} {'consumers':>9} {'share':>6} {'lift':>6}")
    for item in r["top_items"]:
        name = str(item["name"] or "")[:28]
        print(f"  {item['item_id']:<14} {name:<28} {item['consumers']:>9,} {item['share']:>6.1%} {item['lift']:>5.1f}x")
    return 0


def cmd_upscale(args: argparse.Namespace) -> int:
    from nightrec.upscale import upscale

    adapter = load_adapter(args.source or "tmall_brand")
    out = upscale(adapter, args.factor, Path(args.output))
    print(f"wrote {out}")
    return 0


def cmd_setup_airflow(args: argparse.Namespace) -> int:
    from nightrec_app.airflow_env import ensure_metadata_db

    s = _settings(args)
    ensure_metadata_db(s)
    print(f"Airflow's metadata database is migrated; pool {s.airflow.dbt_pool} has {s.airflow.dbt_pool_slots} slot(s)")
    return 0


def cmd_airflow(args: argparse.Namespace) -> int:
    from nightrec_app.airflow_env import run_airflow

    return run_airflow(_settings(args), args.airflow_args, check=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nightrec", description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--profile", help="configuration profile (conf/profiles/<name>.yaml; default local)")
    common.add_argument("--source", help="source profile (conf/sources/<name>.yaml; default from the profile)")
    common.add_argument("--warehouse", help="warehouse root directory (default from the profile)")
    common.add_argument(
        "--set",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="override one setting of the profile, e.g. --set training.eval_days=7 (repeatable; Airflow's tasks and "
        f"spark-submit get it too, through ${SET_VARIABLE})",
    )
    common.add_argument(
        "--verbose",
        dest="quiet",
        action="store_false",
        help="stream Airflow's whole output (default: progress lines; full log under AIRFLOW_HOME)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    d = date.fromisoformat

    p = sub.add_parser(
        "demo", parents=[common], help="bootstrap the history, then run the nightly DAG for the last days"
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "land", parents=[common], help="land deliveries into raw/ (replay the bundled history, or one file)"
    )
    p.add_argument("--start", type=d, help="first day to replay (default: first day of the history)")
    p.add_argument("--end", type=d, help="last day to replay, inclusive (default: last day of the history)")
    p.add_argument("--bundled", help="replay this history file instead of the adapter's bundled one")
    p.add_argument("--file", help="land this one delivered file (needs --ds)")
    p.add_argument("--ds", type=d, help="the delivery day of --file")
    p.set_defaults(func=cmd_land)

    p = sub.add_parser("bootstrap", parents=[common], help="build the history through the `bootstrap` DAG")
    p.add_argument("--start", type=d, help="first day (default: first day of the history)")
    p.add_argument("--end", type=d, help="last day, inclusive (default: the day before nightly_start)")
    p.set_defaults(func=cmd_bootstrap)

    p = sub.add_parser("nightly", parents=[common], help="run the nightly DAG for one day D")
    p.add_argument("--day", type=d, help="the day D to process (default NIGHTREC_RUN_DATE)")
    p.set_defaults(func=cmd_nightly)

    p = sub.add_parser("backfill", parents=[common], help="run the nightly DAG for every day of a range")
    p.add_argument("--start", type=d, required=True, help="first day")
    p.add_argument("--end", type=d, required=True, help="last day, inclusive")
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip the first days whose own nightly run succeeded (an interrupted backfill goes on where it "
        "stopped); without it every day is run again, which gives the same tables",
    )
    p.set_defaults(func=cmd_backfill)

    p = sub.add_parser("status", parents=[common], help="per-day reconciliation from the run manifests")
    p.add_argument("--start", type=d, help="first day (default: first day of the history)")
    p.add_argument("--end", type=d, help="last day, inclusive (default: last day of the history)")
    p.add_argument("--all", action="store_true", help="also list days not ingested yet")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "report",
        parents=[common],
        help="one day's run from its manifest: reconciliation, quality, features, training, top-k",
        description="Print what the runs of day D recorded in <warehouse>/_runs/ds=D/manifest.json: ingest "
        "reconciliation, sequences, the Great Expectations results, Feast materialization, the models trained and "
        "their gate decisions, the top-k version published. A stage the day did not run is named as such.",
    )
    p.add_argument("--day", type=d, help="the data day D (default: the latest day with a run manifest)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "retention",
        parents=[common],
        help="list (or --apply: remove) the nightly outputs older than retention.days",
        description="The nightly DAG's apply_retention task, by hand: the candidates, top-k versions, model versions, "
        "segment partitions and run manifests of days before D - days + 1. Never the served lists or their rollback "
        "targets, a model's champion, the newest version of each output, or the inputs (raw, bronze, silver, marts). "
        "Without --apply it only lists what would go.",
    )
    p.add_argument("--day", type=d, help="the night D (default: the latest night with a run manifest)")
    p.add_argument("--days", type=int, help="the horizon in days (default: retention.days of the profile)")
    p.add_argument("--apply", action="store_true", help="remove them (default: only list)")
    p.set_defaults(func=cmd_retention)

    p = sub.add_parser(
        "forget",
        parents=[common],
        help="remove users from every zone, the marts, Feast and the lists, and keep them out of later deliveries",
        description="Right to be forgotten: rewrites the raw files without the users' rows (the landing ledger keeps "
        "the rows delivered, so reconciliation still adds up), removes their rows from every Parquet table with a "
        "user_id (bronze to the lists, segments and audiences), from the DuckDB marts and the Feast online store, and "
        "records them by key so that no later landing brings them back and the next training is built without "
        "them. Run between nightly runs; running it again removes nothing more. The forget_users DAG does the same "
        'from Airflow: airflow dags trigger forget_users -c \'{"user_ids": ["U1", "U2"]}\'.',
    )
    p.add_argument("--user", action="append", metavar="ID", help="a user id (repeatable)")
    p.add_argument("--file", help="a file of user ids, one per line")
    p.add_argument("--dry-run", action="store_true", help="only count what would be removed")
    p.set_defaults(func=cmd_forget)

    p = sub.add_parser("dbt", parents=[common], help="run dbt (default: build) on the duckdb or spark target")
    p.add_argument("--target", choices=["duckdb", "spark", "spark_thrift"], help="dbt target (default: the profile's)")
    p.add_argument("--start", type=d, help="first day incremental models rebuild (default: all)")
    p.add_argument("--end", type=d, help="last day incremental models rebuild, inclusive")
    p.add_argument("dbt_args", nargs=argparse.REMAINDER, help="dbt command and flags, e.g. `build --select marts`")
    p.set_defaults(func=cmd_dbt)

    p = sub.add_parser("sql", parents=[common], help="query the analysts' DuckDB database (read-only)")
    p.add_argument("query", nargs="?", default="select 1", help="one SQL query")
    p.add_argument("--file", help="a file of queries separated by semicolons (e.g. docs/analyst_queries.sql)")
    p.add_argument("--max-rows", type=int, default=20, help="rows to print per query")
    p.set_defaults(func=cmd_sql)

    p = sub.add_parser("feast", parents=[common], help="the Feast feature store: apply, materialize, lookup, serve")
    p.add_argument("action", choices=["apply", "materialize", "lookup", "serve"])
    p.add_argument("--variant", help="feature_store.<variant>.yaml (default: the profile's feast.variant)")
    p.add_argument("--start", type=d, help="materialize: first data day")
    p.add_argument("--end", type=d, help="materialize: last data day, inclusive")
    p.add_argument("--user", help="lookup: user id")
    p.add_argument("--item", help="lookup: item id")
    p.add_argument("--service", default="serving", help="lookup: feature service (serving, training, topk)")
    p.add_argument("--host", default="127.0.0.1", help="serve: interface (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=6566, help="serve: port (default 6566)")
    p.set_defaults(func=cmd_feast)

    p = sub.add_parser(
        "train",
        parents=[common],
        help="train the models and the ranker of the lists on the marts (the DAG's train, build_candidates and "
        "train_ranker tasks)",
        description="Train the embedding models of training.models (two-tower retrieval, GNOLR; the ordinal baselines "
        "bce, esmm, nolr on request) on the examples through --day (default: the last day in the marts), each stopped "
        "and gated on the metric of its use; build the night's candidates (Spark, local) and train the LightGBM ranker "
        "of the published lists; judge the ranker, the baselines (popularity, own history, co-visitation) and each "
        "model's own list on the last training.eval_days days (next 30 days from the cut-off, next 7 days refreshed); "
        "decide what the night publishes. Writes <warehouse>/models/<model>/<day>/ and prints the comparison.",
    )
    p.add_argument("--day", type=d, help="the last data day E (default: the last day of the training_examples mart)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="force a device (default: training.device)")
    p.add_argument("--seed", type=int, help="seed (default: training.seed)")
    p.add_argument("--epochs", type=int, help="maximum epochs (default: training.epochs)")
    p.add_argument("--models", help="comma-separated embedding models (two_tower,gnolr,bce,esmm,nolr,bce_paper,...)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "topk",
        parents=[common],
        help="precomputed top-k lists: score and publish, show, roll back",
        description="score: rank every user's list for --day (default: the last day of the marts): with topk.model "
        "ranker (the default) the night's candidates by the ranker or the baseline the night decided on, with a model "
        "name that model's champion's embeddings over the whole catalogue; write serving/topk/ds=D/model=V/, "
        "publish it by swapping the "
        "`current` pointer, then bring the online lists (Feast view user_topk, service topk) and the analysts' "
        "topk_current mart to it (what the DAG's score_topk and publish_topk tasks run). rollback: point everything "
        "at the previously published version. show: the pointer, its history, and with --user that user's list.",
    )
    p.add_argument("action", choices=["score", "show", "rollback"])
    p.add_argument("--day", type=d, help="score: the data day D (default: the last day of the marts)")
    p.add_argument("--k", type=int, help="score: items per user (default: topk.k)")
    p.add_argument("--model", help="score: the model whose champion scores (default: topk.model)")
    p.add_argument("--user", help="show: print this user's current list")
    p.add_argument("--limit", type=int, default=20, help="show: rows of the user's list to print (default 20)")
    p.set_defaults(func=cmd_topk)

    p = sub.add_parser(
        "audience",
        parents=[common],
        help="build a lookalike audience from a seed and print how well the expansion finds hidden seed members",
        description="The seed is a SELECT over the analysts' database returning user_id (--seed-sql, e.g. \"select "
        "user_id from marts.fct_interactions where item_id = '7868' and max_level_reached = 4 group by 1 having "
        'count(*) >= 2"; read-only, one statement, only the marts/bronze/silver views, a time limit) or a file of '
        "user ids (--seed-file). Unknown ids are listed; an empty seed or one above half the consumers is refused. "
        "The consumers of user_features on --day are ranked by a positive-unlabelled classifier; the expansion is "
        "first measured on the seed (30%% hidden, recall at 1x, 5x, 10x beside random), then the whole seed is "
        "expanded to --size times its size.",
    )
    p.add_argument("action", choices=["build"])
    p.add_argument("--seed-sql", help="a SELECT over the analysts' views returning user_id")
    p.add_argument("--seed-file", help="a file of user ids (whitespace-separated)")
    p.add_argument("--size", type=int, default=5, help="audience size as a multiple of the seed (default 5)")
    p.add_argument("--day", type=d, help="the day whose user_features represent consumers (default: the last)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds the seed predicate may run (default 60)")
    p.add_argument("--output", help="write seed and audience rows here (.parquet, or .csv)")
    p.set_defaults(func=cmd_audience)

    p = sub.add_parser(
        "segments",
        parents=[common],
        help="print the consumer segments of a night: sizes, behaviour and labels; --segment for one's top items",
        description="Segments are built nightly (the DAG's segments group): the consumer encoder's embeddings "
        "clustered by k-means, ids kept from night to night. Without --segment: one line per segment. With it: the "
        "segment's behaviour beside everyone's and its most over-represented items (lift over all consumers).",
    )
    p.add_argument("action", choices=["show"])
    p.add_argument("--segment", type=int, help="one segment's profile")
    p.add_argument("--day", type=d, help="the night (default: the latest with segments)")
    p.set_defaults(func=cmd_segments)

    p = sub.add_parser("upscale", help="write an up-scaled copy of a source's history (benchmarks)")
    p.add_argument("--source", help="source (default tmall_brand)")
    p.add_argument("--factor", type=int, required=True, help="how many copies of each user (10 = 10x the rows)")
    p.add_argument("--output", required=True, help="output CSV path")
    p.set_defaults(func=cmd_upscale)

    p = sub.add_parser(
        "setup-airflow",
        parents=[common],
        help="create or upgrade Airflow's metadata database and the pools the DAGs use (before a scheduler starts)",
        description="What a deployment runs once before Airflow's scheduler, dag processor and API server start (and "
        "again after an upgrade): `airflow db migrate` on the metadata database the environment names, then the pool "
        "of the dbt tasks (airflow.dbt_pool, airflow.dbt_pool_slots). bootstrap, nightly and backfill do this "
        "themselves.",
    )
    p.set_defaults(func=cmd_setup_airflow)

    p = sub.add_parser("airflow", parents=[common], help="run any airflow command in the project's environment")
    p.add_argument("airflow_args", nargs=argparse.REMAINDER, help="arguments passed to airflow")
    p.set_defaults(func=cmd_airflow)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    show_progress()  # the steps a command runs in this process (training, scoring, Feast) print their progress
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # inside the try: a reader that stopped early is seen here, not at interpreter exit
        return code
    except NightrecError as exc:
        print(f"nightrec: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `nightrec report | head`: the reader has what it wanted; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
