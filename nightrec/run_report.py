"""One day's run read back from its run manifest, as text: what `nightrec report` and the demo print.

The manifest (``_runs/ds=D/manifest.json``, see ``run_manifest``) is the record; this module only lays it out, so
the report says what the tasks wrote and nothing more. A stage with no section is reported as not run on that day:
the bootstrap DAG, for instance, does not train, and a day inside a bootstrap range has no quality sections of its
own (the range's validation is recorded on its last day). Sections a run writes for every day of its range
(quality, features) describe that run, so a day re-read in a later night's lookback shows the later run's.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from nightrec.run_manifest import read_run_manifest
from nightrec.warehouse import Warehouse

NOT_RUN = "not run on this day"


def last_reported_day(warehouse: Warehouse) -> date | None:
    """The latest day with a run manifest, or None when nothing has run yet."""
    days = [
        date.fromisoformat(p.parent.name.removeprefix("ds="))
        for p in warehouse.runs().glob("ds=*/manifest.json")
        if p.parent.name.startswith("ds=")
    ]
    return max(days, default=None)


def report(warehouse: Warehouse, ds: date) -> str:
    """The day's report, or a one-line explanation when the day has no manifest."""
    doc = read_run_manifest(warehouse, ds)
    if doc is None:
        return f"No run manifest for {ds} under {warehouse.runs()}: the day has not been run."
    return render(doc)


def render(doc: dict[str, Any]) -> str:
    stages: dict[str, Any] = doc.get("stages", {})
    airflow = stages.get("airflow")
    header = f"Run of {doc.get('source')} for {doc.get('ds')}"
    if airflow:
        header += f" (Airflow {airflow['dag_id']}, {airflow['run_id']})"
    lines = [header]
    for title, section in [
        ("ingest", _ingest(stages.get("ingest_events"))),
        ("sequences", _sequences(stages.get("build_sequences"))),
        ("quality", _quality(stages)),
        ("features", _features(stages.get("feast_materialize"))),
        ("training", _training(stages.get("training"))),
        ("top-k", _topk(stages.get("topk"))),
    ]:
        lines.append(f"  {title:<10} {section[0]}")
        lines.extend(f"  {'':<10} {more}" for more in section[1:])
    return "\n".join(lines)


def _ingest(s: dict[str, Any] | None) -> list[str]:
    if not s:
        return [NOT_RUN]
    accounted = s["bronze_rows"] + s["quarantined_rows"] + s["redelivered_rows"]
    verdict = "reconciled" if accounted == s["raw_rows"] else f"NOT RECONCILED ({accounted} accounted for)"
    lines = [
        f"{s['raw_rows']:,} raw rows = {s['bronze_rows']:,} bronze + {s['quarantined_rows']:,} quarantined + "
        f"{s['redelivered_rows']:,} re-delivered: {verdict}"
    ]
    if s.get("quarantine_reasons"):
        reasons = sorted(s["quarantine_reasons"].items())
        lines.append("quarantined by reason: " + ", ".join(f"{k} {v:,}" for k, v in reasons))
    return lines


def _sequences(s: dict[str, Any] | None) -> list[str]:
    if not s:
        return [NOT_RUN]
    return [f"{s['users']:,} users active, {s['tokens']:,} tokens kept (last {s['sequence_length']} per user)"]


def _quality(stages: dict[str, Any]) -> list[str]:
    lines, docs = [], None
    for boundary in ("raw", "bronze", "marts"):
        q = stages.get(f"quality_{boundary}")
        if q is None:
            lines.append(f"{boundary}: {NOT_RUN}")
            continue
        docs = q.get("data_docs") or docs
        passed = sum(t["passed"] for t in q["tables"].values())
        total = sum(t["expectations"] for t in q["tables"].values())
        verdict = "FAILED" if not q["success"] else f"{len(q['warnings'])} warning(s)" if q["warnings"] else "ok"
        n = len(q["tables"])
        lines.append(f"{boundary}: {verdict}, {passed}/{total} expectations on {n} table{'s' * (n != 1)}")
        lines.extend(f"  [critical] {f['table']}: {f['expectation']}: {f['summary']}" for f in q["critical"])
        lines.extend(f"  [warning] {f['table']}: {f['expectation']}: {f['summary']}" for f in q["warnings"])
    if docs:
        lines.append(f"Data Docs: {docs}")
    return lines


def _features(s: dict[str, Any] | None) -> list[str]:
    if not s:
        return [NOT_RUN]
    rows = ", ".join(f"{view} {n:,}" for view, n in sorted(s["rows"].items()))
    start, end = s["feature_time_window"]
    return [f"the run materialized feature times [{start}, {end}) to the {s['variant']} online store: {rows}"]


def _training(s: dict[str, Any] | None) -> list[str]:
    if not s:
        return [NOT_RUN]
    if "skipped" in s:
        return [f"skipped: {s['skipped']}"]
    split = s["split"]
    lines = [
        f"version {s['version']} in {s['seconds']} s; models on [{split['train'][0]}, {split['train'][1]}), "
        f"ranker on [{split['ranker'][0]}, {split['ranker'][1]}), evaluated on "
        f"[{split['evaluation'][0]}, {split['evaluation'][1]})"
    ]
    for name, m in sorted(s["models"].items()):
        state = "published" if m["published"] else "champion kept"
        lines.append(f"{name:<10} ndcg@20 {m['ndcg@20']:.4f}  {state}: {m['reason']}")
    return lines


def _topk(s: dict[str, Any] | None) -> list[str]:
    if not s:
        return [NOT_RUN]
    if "counts" not in s:
        return [f"nothing published: {s.get('skipped', 'no lists scored')}"]
    c = s["counts"]
    return [
        f"{c['model_version']}: {c['rows']:,} rows for {c['users']:,} users (k {c['k']}, "
        f"{c['cold_start_users']:,} cold-start users on popular items), {c['items']:,} items eligible",
        f"current -> {s['current']}; online store: {s.get('online_users', 0):,} users",
    ]
