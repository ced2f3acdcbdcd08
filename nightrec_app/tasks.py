"""Python callables the DAGs run (the DAG files hold wiring only; heavy imports happen here, at run time)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from nightrec import run_report
from nightrec.adapters import days_between, load_adapter
from nightrec.config import load_settings
from nightrec.errors import HistoryTooShort, NothingToProcess, QualityCheckFailed, ReconciliationError
from nightrec.run_manifest import read_run_manifest, reconciles, update_run_manifest
from nightrec.warehouse import Warehouse


def land_days(start: str, end: str) -> dict[str, Any]:
    """Replay the bundled history's days [start, end) into raw/ (the demo's stand-in for the shop's delivery)."""
    from nightrec.landing import replay

    settings = load_settings()
    adapter = load_adapter(settings.source)
    lo = max(date.fromisoformat(start), adapter.history_start)
    hi = min(date.fromisoformat(end), adapter.history_end + timedelta(days=1))
    last_day = date.fromisoformat(end) - timedelta(days=1)
    if last_day > adapter.history_end:
        raise NothingToProcess(
            f"Day {last_day} is past the last day of {adapter.name}'s history ({adapter.history_end}); "
            "nothing is delivered for it, so this run is skipped."
        )
    warehouse = Warehouse(settings.warehouse_root, adapter.name)
    warehouse.ensure_layout()
    report = replay(adapter, warehouse, lo, hi)
    print(report.summary(), flush=True)
    return {
        "days": len(report.days),
        "rows": report.rows,
        "landed": report.count("landed"),
        "replaced": report.count("replaced"),
        "unchanged": report.count("unchanged"),
    }


def ingest_attribute_snapshots() -> dict[str, Any]:
    """Rewrite bronze/item_attributes and bronze/user_attributes from the landed attribute files."""
    from nightrec.attributes import ingest_attributes

    settings = load_settings()
    adapter = load_adapter(settings.source)
    counts = ingest_attributes(adapter, Warehouse(settings.warehouse_root, adapter.name))
    print(f"{adapter.name} attributes: {counts}", flush=True)
    return counts


def run_days(start: str, end: str) -> list[date]:
    """The days of [start, end) that the source's history covers."""
    adapter = load_adapter(load_settings().source)
    lo = max(date.fromisoformat(start), adapter.history_start)
    hi = min(date.fromisoformat(end), adapter.history_end + timedelta(days=1))
    return days_between(lo, hi)


def gx_run_name(dag_id: str, run_id: str) -> str:
    """A Data Docs run name from the Airflow run (GX keeps one result per table and run name)."""
    return f"{dag_id}__{run_id}".replace(":", "").replace("+", "_").replace("/", "_")


def validate_boundary(boundary: str, start: str, end: str, dag_id: str, run_id: str) -> dict[str, Any]:
    """Run one boundary's GX suites (raw, bronze or marts) over the run's days; stop the run on a critical failure.

    The outcome goes into each day's run manifest (section ``quality_<boundary>``) either way, and the Data Docs
    site under ``<warehouse>/docs/gx/`` gains this run's pages.
    :raises QualityCheckFailed: a critical expectation failed (the message names table, expectation, sample rows).
    """
    from nightrec.quality.gx_run import validate
    from nightrec.quality.suites import SUITES

    settings = load_settings()
    adapter = load_adapter(settings.source)
    warehouse = Warehouse(settings.warehouse_root, adapter.name)
    days = run_days(start, end)
    suites = SUITES[boundary](settings, adapter, warehouse, days)
    report = validate(
        settings.warehouse_root, boundary, gx_run_name(dag_id, run_id), suites, settings.quality.sample_rows
    )
    for ds in days:
        update_run_manifest(warehouse, ds, f"quality_{boundary}", report.to_manifest())
    print(report.summary(), flush=True)
    if not report.success:
        raise QualityCheckFailed(report.failure_message())
    return {"tables": report.tables, "warnings": len(report.warnings)}


def record_run(start: str, end: str, dag_id: str, run_id: str) -> dict[str, Any]:
    """Check every day of the run reconciled, stamp the run manifests with the Airflow run, write the HTML run report
    (``docs/runs/``) and print a summary."""
    settings = load_settings()
    adapter = load_adapter(settings.source)
    warehouse = Warehouse(settings.warehouse_root, adapter.name)
    lo = max(date.fromisoformat(start), adapter.history_start)
    totals = {"raw_rows": 0, "bronze_rows": 0, "quarantined_rows": 0, "redelivered_rows": 0, "sequence_users": 0}
    for ds in days_between(lo, date.fromisoformat(end)):
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
    index = run_report.write_html(warehouse, days_between(lo, date.fromisoformat(end)))
    print(f"{adapter.name} [{lo}, {end}): {totals}; run report {index}", flush=True)
    return totals


def publish_marts() -> dict[str, Any]:
    """Export the marts to Parquet, rebuild the analysts' DuckDB file and the dbt docs site."""
    from nightrec.dbt_runner import run_dbt, target_path
    from nightrec.marts_publish import build_analyst_db, export_marts, publish_dbt_docs

    settings = load_settings()
    counts = export_marts(settings)
    analyst = build_analyst_db(settings)
    run_dbt(settings, ["docs", "generate"])
    docs = publish_dbt_docs(settings, target_path(settings.dbt_target))
    print(f"marts exported {counts}; analysts' database {analyst}; dbt docs {docs}/index.html", flush=True)
    return {"rows": counts, "analyst_db": str(analyst), "dbt_docs": str(docs)}


def feast_apply() -> dict[str, Any]:
    """`feast apply` of feature_repo/ against the configured variant (after the marts are exported)."""
    from nightrec import feature_store

    return feature_store.apply(load_settings())


def feast_materialize(start: str, end: str) -> dict[str, Any]:
    """Materialize exactly the run's data days [start, end) into the online store, in bounded chunks."""
    from nightrec import feature_store

    settings = load_settings()
    days = run_days(start, end)
    if not days:
        return {"chunks": 0, "rows": 0}
    chunks = feature_store.materialize(settings, days[0], days[-1] + timedelta(days=1))
    rows = {view: sum(c.rows[view] for c in chunks) for view in feature_store.VIEWS}
    window = feature_store.materialization_window(days[0], days[-1] + timedelta(days=1))
    adapter = load_adapter(settings.source)
    warehouse = Warehouse(settings.warehouse_root, adapter.name)
    summary = {
        "variant": settings.feast.variant,
        "feature_time_window": [window[0].isoformat(), window[1].isoformat()],
        "rows": rows,
        "seconds": round(sum(c.seconds for c in chunks), 2),
    }
    for ds in days:
        update_run_manifest(warehouse, ds, "feast_materialize", summary)
    return {"chunks": len(chunks), **summary}


def train_models(start: str, end: str) -> dict[str, Any]:
    """Nightly training of the embedding models for the run's last data day (end - 1): each stopped, evaluated and
    gated on the metric of its use, with the embeddings the candidate job reads.

    A warehouse whose history is shorter than the evaluation, validation and ranker windows gets no models: the
    reason (naming the settings that decide it) is printed and recorded in the run manifest.
    """
    from training import run as training_run

    settings = load_settings()
    days = run_days(start, end)
    if not days:
        return {"skipped": "no days in the run"}
    last_day = days[-1]
    adapter = load_adapter(settings.source)
    warehouse = Warehouse(settings.warehouse_root, adapter.name)
    try:
        report = training_run.run(settings, last_day)
    except HistoryTooShort as exc:
        print(f"training skipped: {exc}", flush=True)
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


def train_ranker(start: str, end: str) -> dict[str, Any]:
    """After build_candidates: train the ranker of the published lists, judge every list (ranker, baselines, models)
    on the held-out window at both horizons, gate it and decide what the night publishes (recorded in the run
    manifest's ``ranker`` section)."""
    from training import ranker

    settings = load_settings()
    days = run_days(start, end)
    if not days:
        return {"skipped": "no days in the run"}
    last_day = days[-1]
    warehouse = Warehouse(settings.warehouse_root, load_adapter(settings.source).name)
    if not settings.training.ranker:
        summary: dict[str, Any] = {"skipped": "training.ranker is off"}
    elif not (warehouse.candidates(last_day) / "_SUCCESS").is_file():
        summary = {"skipped": f"no candidates for {last_day} (build_candidates skipped: history too short?)"}
    else:
        report = ranker.run(settings, last_day)
        summary = {
            "version": report["version"],
            "seconds": report["seconds"],
            "metrics": report["metrics"],
            "gate": report["gate"],
            "lists": report["lists"],
            "training": report["training"],
        }
    if "skipped" in summary:
        print(f"ranker skipped: {summary['skipped']}", flush=True)
    update_run_manifest(warehouse, last_day, "ranker", summary)
    return {k: v for k, v in summary.items() if k != "metrics"}


def publish_topk(start: str, end: str) -> dict[str, Any]:
    """After score_topk: bring the online lists and the analysts' mart to the version published for the run's last
    day. A run whose scoring was skipped (no champion yet) or that backfilled an older day moves nothing."""
    from nightrec import topk_publish
    from nightrec.storage import read_json

    settings = load_settings()
    days = run_days(start, end)
    if not days:
        return {"skipped": "no days in the run"}
    day = days[-1]
    warehouse = Warehouse(settings.warehouse_root, load_adapter(settings.source).name)
    pointer = topk_publish.current(settings)
    if pointer is None or pointer["ds"] != day.isoformat():
        why = "no top-k scored (no champion yet)" if pointer is None else f"current top-k is {pointer['path']}"
        written = sorted(Warehouse.of(settings).serving_topk().glob(f"ds={day.isoformat()}/model=*/_SUCCESS"))
        summary: dict[str, Any] = {"skipped": why, "written": [str(p.parent) for p in written]}
    else:
        counts = read_json(Warehouse.of(settings).serving_topk() / pointer["path"] / "_SUCCESS")
        summary = {**topk_publish.serve(settings), "counts": counts}
    print(f"publish_topk: {summary}", flush=True)
    update_run_manifest(warehouse, day, "topk", summary)
    return summary
