"""Python callables the DAGs run (the DAG files hold wiring only; heavy imports happen here, at run time).

Each takes the :class:`~nightrec.context.RunContext` of its run; :func:`context` builds it in a task's process from
the settings Airflow's environment carries (``Settings.environment``), tests build their own.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

from nightrec import run_report
from nightrec.completeness import mark_complete
from nightrec.config import Settings, load_settings
from nightrec.context import RunContext
from nightrec.errors import HistoryTooShort, NothingToProcess, QualityCheckFailed, ReconciliationError
from nightrec.run_manifest import begin_attempt, end_attempt, read_run_manifest, reconciles, update_run_manifest
from nightrec.warehouse import Warehouse

log = logging.getLogger(__name__)


def context(start: str | None = None, end: str | None = None) -> RunContext:
    """The context of a task's run [start, end), from the settings of the task's environment."""
    return RunContext.of(load_settings(), start, end)


def land_days(ctx: RunContext, dag_id: str, run_id: str) -> dict[str, Any]:
    """Open the run's attempt on each of its days, then replay the bundled history's days into raw/ (the demo's
    stand-in for the shop's delivery). What the replay did to each day's file (landed, unchanged, replaced, or a
    user's delivery kept) goes into the day's manifest, section ``land``. A live feed (no bundled history) replays
    nothing: its days must hold what the user landed, and the section lists those files.

    :raises InputError: a live feed's day has no delivery (the message names the command that lands one).
    """
    from nightrec.landing import replay

    if ctx.past_history is not None:
        raise NothingToProcess(
            f"Day {ctx.past_history} is past the last day of {ctx.adapter.name}'s history "
            f"({ctx.adapter.history_end}); nothing is delivered for it, so this run is skipped."
        )
    ctx.warehouse.ensure_layout()
    begin_attempt(ctx.warehouse, ctx.days, dag_id, run_id)
    if ctx.adapter.is_feed:
        return _delivered_days(ctx)
    report = replay(ctx.adapter, ctx.warehouse, ctx.start, ctx.end)
    for day in report.days:
        section: dict[str, Any] = {"by": "replay", "files": [day.describe()]}
        if outside := report.outside_for(day.ds):  # the history file's rows no day of the history holds
            section["outside_history"] = outside
        update_run_manifest(ctx.warehouse, day.ds, "land", section)
    log.info(report.summary())
    return {"days": len(report.days), "rows": report.rows} | {
        status: report.count(status) for status in ("landed", "replaced", "unchanged", "kept")
    }


def _delivered_days(ctx: RunContext) -> dict[str, Any]:
    """A live feed's land step: the deliveries of every day of the run, recorded as they are (nothing is written)."""
    from nightrec.deliveries import inventory

    files = inventory(ctx.adapter, ctx.warehouse, ctx.days, check_header=False)  # the raw check judges headers
    for ds in ctx.days:
        listed = [{"file": f.path.name, "rows": f.rows, "status": "delivered"} for f in files if f.ds == ds]
        update_run_manifest(ctx.warehouse, ds, "land", {"by": "delivery", "files": listed})
    log.info(f"{ctx.adapter.name}: {len(files)} delivered file(s) over {len(ctx.days)} day(s), nothing replayed")
    return {"days": len(ctx.days), "files": len(files), "rows": sum(f.rows for f in files)}


def _error_text(error: BaseException | None) -> str:
    return f"{type(error).__name__}: {error}" if error is not None else "the task failed (no exception recorded)"


def record_failure(
    warehouse: Warehouse, dag_id: str, run_id: str, task_id: str, error: BaseException | None, day: str | None
) -> None:
    """A task of the run failed: close the attempt of the run's days as failed, naming the task and its error.

    :param day: the run's own day (its data interval's start), used when the run failed before it recorded its
        attempt, so the failure is still visible on that day.
    """
    message = _error_text(error)
    closed = end_attempt(warehouse, run_id, "failed", task=task_id, error=message)
    if not closed and day is not None:
        end_attempt(warehouse, run_id, "failed", days=[date.fromisoformat(day)], task=task_id, error=message)


def alert_failure(
    settings: Settings, dag_id: str, run_id: str, task_id: str, error: BaseException | None, day: str | None
) -> dict[str, str]:
    """Send the failed task to every notifier (nightrec/notify.py); each outcome is logged and returned."""
    from nightrec.notify import notify

    message = _error_text(error)
    outcomes = notify(settings, "task_failed", dag_id=dag_id, run_id=run_id, task_id=task_id, day=day, error=message)
    log.info(f"failure of {task_id} sent to the notifiers: {outcomes}")
    return outcomes


def ingest_attribute_snapshots(ctx: RunContext) -> dict[str, Any]:
    """Rewrite bronze/item_attributes and bronze/user_attributes from the landed attribute files."""
    from nightrec.attributes import ingest_attributes

    counts = ingest_attributes(ctx.adapter, ctx.warehouse)
    log.info(f"{ctx.adapter.name} attributes: {counts}")
    return counts


def gx_run_name(dag_id: str, run_id: str) -> str:
    """A Data Docs run name from the Airflow run (GX keeps one result per table and run name)."""
    return f"{dag_id}__{run_id}".replace(":", "").replace("+", "_").replace("/", "_")


def validate_boundary(ctx: RunContext, boundary: str, dag_id: str, run_id: str) -> dict[str, Any]:
    """Run one boundary's GX suites (raw, bronze or marts) over the run's days; stop the run on a critical failure.

    The outcome goes into each day's run manifest (section ``quality_<boundary>``) either way, and the Data Docs
    site under ``<warehouse>/docs/gx/`` gains this run's pages.
    :raises QualityCheckFailed: a critical expectation failed (the message names table, expectation, sample rows).
    """
    from nightrec.quality.gx_run import QualityReport, validate
    from nightrec.quality.suites import suites_in_chunks

    settings = ctx.settings
    name = gx_run_name(dag_id, run_id)
    report = QualityReport(boundary, name, ctx.warehouse.data_docs())
    chunks = suites_in_chunks(boundary, settings, ctx.adapter, ctx.warehouse, ctx.days)
    for days, suites in chunks:
        # GX keeps one result per table and run name: a run checked in chunks names each chunk's days
        chunk_name = name if len(days) == len(ctx.days) else f"{name}__{days[0]:%Y%m%d}-{days[-1]:%Y%m%d}"
        part = validate(settings.warehouse_root, boundary, chunk_name, suites, settings.quality.sample_rows)
        if len(days) < len(ctx.days):
            log.info(f"quality {boundary} {days[0]}..{days[-1]}: {'OK' if part.success else 'FAILED'}")
        report.add(part)
        del suites, part  # the chunk's frames go before the next chunk's are read
    for ds in ctx.days:
        update_run_manifest(ctx.warehouse, ds, f"quality_{boundary}", report.to_manifest())
    log.info(report.summary())
    if not report.success:
        raise QualityCheckFailed(report.failure_message())
    return {"tables": report.tables, "warnings": len(report.warnings)}


def record_run(ctx: RunContext, dag_id: str, run_id: str) -> dict[str, Any]:
    """Check every day of the run reconciled, stamp the run manifests with the Airflow run, write the HTML run report
    (``docs/runs/``) and print a summary."""
    warehouse = ctx.warehouse
    totals = {"raw_rows": 0, "bronze_rows": 0, "quarantined_rows": 0, "redelivered_rows": 0, "sequence_users": 0}
    for ds in ctx.days:
        doc = read_run_manifest(warehouse, ds) or {"stages": {}}
        ingest, seq = doc["stages"].get("ingest_events"), doc["stages"].get("build_sequences")
        if ingest is None or seq is None:
            raise ReconciliationError(f"Run manifest of {ds} lacks {'ingest' if ingest is None else 'sequences'}")
        if not reconciles(ingest):
            raise ReconciliationError(f"{ds}: raw rows do not reconcile: {ingest}")
        for k in ("raw_rows", "bronze_rows", "quarantined_rows", "redelivered_rows"):
            totals[k] += ingest[k]
        totals["sequence_users"] += seq["users"]
        update_run_manifest(warehouse, ds, "airflow", {"dag_id": dag_id, "run_id": run_id})
    end_attempt(warehouse, run_id, "success", days=ctx.days)
    index = run_report.write_html(warehouse, ctx.days)
    log.info(f"{ctx.adapter.name} [{ctx.start}, {ctx.end}): {totals}; run report {index}")
    return totals


def publish_marts(ctx: RunContext) -> dict[str, Any]:
    """Export the marts to Parquet, rebuild the analysts' DuckDB file and the dbt docs site."""
    from nightrec.dbt_runner import run_dbt, target_path
    from nightrec.marts_publish import build_analyst_db, export_marts, publish_dbt_docs

    settings = ctx.settings
    counts = export_marts(settings)
    analyst = build_analyst_db(settings)
    run_dbt(settings, ["docs", "generate"])
    docs = publish_dbt_docs(settings, target_path(settings, settings.dbt_target))
    log.info(f"marts exported {counts}; analysts' database {analyst}; dbt docs {docs}/index.html")
    if ctx.last_day is not None:
        mark_complete(ctx.warehouse, "marts", ctx.last_day)
    return {"rows": counts, "analyst_db": str(analyst), "dbt_docs": str(docs)}


def feast_apply(ctx: RunContext) -> dict[str, Any]:
    """`feast apply` of feature_repo/ against the configured variant (after the marts are exported)."""
    from nightrec import feature_store

    return feature_store.apply(ctx.settings)


def feast_materialize(ctx: RunContext) -> dict[str, Any]:
    """Materialize exactly the run's data days [start, end) into the online store, in bounded chunks."""
    from nightrec import feature_store

    settings = ctx.settings
    if not ctx.days:
        return {"chunks": 0, "rows": 0}
    chunks = feature_store.materialize(settings, ctx.start, ctx.end)
    rows = {view: sum(c.rows[view] for c in chunks) for view in feature_store.VIEWS}
    window = feature_store.materialization_window(ctx.start, ctx.end)
    summary = {
        "variant": settings.feast.variant,
        "feature_time_window": [window[0].isoformat(), window[1].isoformat()],
        "rows": rows,
        "seconds": round(sum(c.seconds for c in chunks), 2),
    }
    for ds in ctx.days:
        update_run_manifest(ctx.warehouse, ds, "feast_materialize", summary)
    mark_complete(ctx.warehouse, "features", ctx.days[-1], variant=settings.feast.variant)
    return {"chunks": len(chunks), **summary}


def train_models(ctx: RunContext) -> dict[str, Any]:
    """Nightly training of the embedding models for the run's last data day (end - 1): each stopped, evaluated and
    gated on the metric of its use, with the embeddings the candidate job reads.

    A warehouse whose history is shorter than the evaluation, validation and ranker windows gets no models: the
    reason (naming the settings that decide it) is printed and recorded in the run manifest.
    """
    from training import run as training_run

    last_day, warehouse = ctx.last_day, ctx.warehouse
    if last_day is None:
        return {"skipped": "no days in the run"}
    try:
        report = training_run.run(ctx.settings, last_day)
    except HistoryTooShort as exc:
        log.info(f"training skipped: {exc}")
        update_run_manifest(warehouse, last_day, "training", {"skipped": str(exc)})
        return {"skipped": str(exc)}
    summary = {
        "version": report["version"],
        "split": report["split"],
        "seconds": report["seconds"],
        "models": {
            name: {
                "published": m["gate"]["publish"],
                "reason": m["gate"]["reason"],
                "metric": m["gate"]["metric"],
                "value": m["gate"].get("new"),
            }
            for name, m in report["models"].items()
        },
    }
    update_run_manifest(warehouse, last_day, "training", summary)
    return summary


def train_consumer_encoder(ctx: RunContext) -> dict[str, Any]:
    """The night's consumer embedding table (training/consumer_embeddings.py), which the segments job clusters; with
    segments.enabled off, or no sequences yet, the reason is recorded instead."""
    from training import consumer_embeddings

    day = ctx.last_day
    if day is None:
        return {"skipped": "no days in the run"}
    if not ctx.settings.segments.enabled:
        summary: dict[str, Any] = {"skipped": "segments.enabled is off"}
    else:
        try:
            summary = consumer_embeddings.run(ctx.settings, day)
        except HistoryTooShort as exc:
            summary = {"skipped": str(exc)}
    if "skipped" in summary:
        log.info(f"consumer encoder skipped: {summary['skipped']}")
    update_run_manifest(ctx.warehouse, day, "consumer_encoder", summary)
    return summary


def build_audiences(ctx: RunContext) -> dict[str, Any]:
    """Rebuild the saved lookalike audiences (conf/audiences/<source>.yaml) over the night's consumers into
    segments/audiences/ds=D (always written, empty without audiences, so the mart's zone exists). An audience whose
    seed fails is reported with its error in the manifest and the report; the others are still built."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nightrec import audiences
    from nightrec.storage import SUCCESS_FILE, staged
    from nightrec.warehouse import partition

    day = ctx.last_day
    if day is None:
        return {"skipped": "no days in the run"}
    if not (partition(ctx.warehouse.segments("membership"), day) / SUCCESS_FILE).is_file():
        summary: dict[str, Any] = {"skipped": f"no segments for {day}"}
    else:
        saved = audiences.saved_audiences(ctx.adapter.name)
        rows, report = audiences.build_saved(ctx.settings, day, saved)
        schema = pa.schema(
            [
                ("audience", pa.string()),
                ("user_id", pa.string()),
                ("score", pa.float64()),
                ("rank", pa.int64()),
                ("is_seed", pa.bool_()),
            ]
        )
        summary = {"file": str(audiences.audiences_file(ctx.adapter.name)), "rows": len(rows), "audiences": report}
        with staged(partition(ctx.warehouse.segments("audiences"), day), success=summary) as staging:
            table = pa.Table.from_pandas(rows, schema=schema, preserve_index=False)
            pq.write_table(table, staging / "part-00000.parquet")
        for name, result in report.items():
            if "error" in result:
                log.warning(f"audience {name}: FAILED: {result['error']}")
            else:
                log.info(f"audience {name}: seed {result['seed']:,}, {result['expanded']:,} expanded")
    update_run_manifest(ctx.warehouse, day, "audiences", summary)
    return summary


def publish_segments(ctx: RunContext) -> dict[str, Any]:
    """After build_segments: the segment marts for the night (dbt, tag `segments`), exported and in the analysts'
    database, and each consumer's segment in the Feast view `user_segments` (service `segments`). A night the
    segments job skipped publishes nothing and says why."""
    from nightrec.marts_publish import publish_segment_marts
    from nightrec.storage import SUCCESS_FILE
    from nightrec.warehouse import partition

    day = ctx.last_day
    if day is None:
        return {"skipped": "no days in the run"}
    done = partition(ctx.warehouse.segments("membership"), day) / SUCCESS_FILE
    if not done.is_file():
        summary: dict[str, Any] = {"skipped": f"no segments for {day} (build_segments skipped; see its log)"}
    else:
        from nightrec import feature_store

        marts = publish_segment_marts(ctx.settings, day, ctx.end)
        feature_store.apply(ctx.settings)  # registers user_segments once its mart exists
        online = feature_store.materialize_at(ctx.settings, feature_store.SEGMENTS_VIEW, feature_store.known_at(day))
        summary = {"marts": marts, "online_users": online}
        mark_complete(ctx.warehouse, "segments", day)
    log.info(f"publish_segments: {summary}")
    built = (read_run_manifest(ctx.warehouse, day) or {}).get("stages", {}).get("segments", {})
    update_run_manifest(ctx.warehouse, day, "segments", {**built, "published": summary})
    return summary


def apply_retention(ctx: RunContext) -> dict[str, Any]:
    """Remove the nightly outputs older than ``retention.days`` (nightrec/retention.py: never the served lists,
    their rollback targets, the champions or the newest versions) and record what went in the night's manifest."""
    from nightrec import retention

    day = ctx.last_day
    if day is None:
        return {"skipped": "no days in the run"}
    summary = retention.apply(ctx.settings, day)
    update_run_manifest(ctx.warehouse, day, "retention", summary)
    return summary


def forget_users(ctx: RunContext, user_ids: list[str], dry_run: bool = False, check: bool = True) -> dict[str, Any]:
    """Remove the users from every zone (nightrec/forget.py) and say what went.

    :param check: raise when a day's counts no longer reconcile afterwards (the DAG's task then fails, visibly);
        the command prints them and exits non-zero instead.
    """
    from nightrec import forget

    summary = forget.forget(ctx.settings, user_ids, dry_run=dry_run)
    # the log and Airflow's XCom keep counts, never an id (not even one that was not found)
    log.info(f"forget_users: {summary['users']} user(s), {len(summary['not_found'])} not found: {summary['removed']}")
    if check and summary["unreconciled_days"]:
        raise ReconciliationError(f"after forgetting, these days do not reconcile: {summary['unreconciled_days']}")
    return summary


def train_ranker(ctx: RunContext) -> dict[str, Any]:
    """After build_candidates: train the ranker of the published lists, judge every list (ranker, baselines, models)
    on the held-out window at both horizons, gate it and decide what the night publishes (recorded in the run
    manifest's ``ranker`` section)."""
    from training import ranker

    settings, last_day, warehouse = ctx.settings, ctx.last_day, ctx.warehouse
    if last_day is None:
        return {"skipped": "no days in the run"}
    if not settings.training.ranker:
        summary: dict[str, Any] = {"skipped": "training.ranker is off"}
    elif not (warehouse.candidates(last_day) / "_SUCCESS").is_file():
        summary = {"skipped": f"no candidates for {last_day} (build_candidates skipped: history too short?)"}
    else:
        report = ranker.run(settings, last_day)
        summary = {
            "version": report["version"],
            "seconds": report["seconds"],
            "phase_seconds": report["phase_seconds"],
            "metrics": report["metrics"],
            "gate": report["gate"],
            "lists": report["lists"],
            "training": report["training"],
        }
    if "skipped" in summary:
        log.info(f"ranker skipped: {summary['skipped']}")
    update_run_manifest(warehouse, last_day, "ranker", summary)
    return {k: v for k, v in summary.items() if k != "metrics"}


def publish_topk(ctx: RunContext) -> dict[str, Any]:
    """After score_topk: bring the online lists and the analysts' mart to the version published for the run's last
    day. A run whose scoring was skipped (no champion yet) or that backfilled an older day moves nothing."""
    from nightrec import topk_publish
    from nightrec.storage import read_json

    settings, day, warehouse = ctx.settings, ctx.last_day, ctx.warehouse
    if day is None:
        return {"skipped": "no days in the run"}
    pointer = topk_publish.current(settings)
    if pointer is None or pointer["ds"] != day.isoformat():
        why = "no top-k scored (no champion yet)" if pointer is None else f"current top-k is {pointer['path']}"
        written = sorted(warehouse.serving_topk().glob(f"ds={day.isoformat()}/model=*/_SUCCESS"))
        summary: dict[str, Any] = {"skipped": why, "written": [str(p.parent) for p in written]}
    else:
        counts = read_json(warehouse.serving_topk() / pointer["path"] / "_SUCCESS")
        summary = {**topk_publish.serve(settings), "counts": counts}
        mark_complete(warehouse, "topk", day, version=pointer["path"])
    log.info(f"publish_topk: {summary}")
    update_run_manifest(warehouse, day, "topk", summary)
    return summary
