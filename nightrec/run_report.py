"""One day's run read back from its run manifest: as text (`nightrec report`, the end of the demo) and as the HTML
pages the DAG's last task writes under ``docs/runs/`` (one per day and an index of every day).

The manifest (``_runs/ds=D/manifest.json``, see ``run_manifest``) is the record; this module only lays it out, so
the report says what the tasks wrote and nothing more. A stage with no section is reported as not run on that day:
the bootstrap DAG, for instance, does not train, and a day inside a bootstrap range has no quality sections of its
own (the range's validation is recorded on its last day). Sections a run writes for every day of its range
(quality, features) describe that run, so a day re-read in a later night's lookback shows the later run's.
"""

from __future__ import annotations

import html
from datetime import date
from pathlib import Path
from typing import Any

from nightrec.lookalike import SHARES
from nightrec.run_manifest import accounted_rows, manifest_days, read_run_manifest, reconciles, stale_sections
from nightrec.storage import write_text_atomic
from nightrec.warehouse import Warehouse

NOT_RUN = "not run on this day"
# the quality sections in the order the DAG validates them: the keys of quality.suites.SUITES, not imported here
# (that module pulls in pandas and GX, and `nightrec status` needs neither)
BOUNDARIES = ("raw", "bronze", "marts")


def last_reported_day(warehouse: Warehouse) -> date | None:
    """The latest day with a run manifest, or None when nothing has run yet."""
    return max(manifest_days(warehouse), default=None)


def report(warehouse: Warehouse, ds: date) -> str:
    """The day's report, or a one-line explanation when the day has no manifest."""
    doc = read_run_manifest(warehouse, ds)
    if doc is None:
        return f"No run manifest for {ds} under {warehouse.runs()}: the day has not been run."
    return render(doc)


def render(doc: dict[str, Any]) -> str:
    lines = [_header(doc)]
    for title, section in _sections(doc):
        lines.append(f"  {title:<10} {section[0]}")
        lines.extend(f"  {'':<10} {more}" for more in section[1:])
    return "\n".join(lines)


def write_html(warehouse: Warehouse, days: list[date]) -> Path:
    """Write the page of each day in ``days`` that has a manifest, then the index of every day; returns the index.

    Each file is replaced atomically, so a reader sees a whole page, old or new.
    """
    from nightrec.adapters import load_adapter
    from nightrec.report_charts import charts_html, is_night

    root = warehouse.run_pages()
    docs = {ds: read_run_manifest(warehouse, ds) for ds in manifest_days(warehouse)}
    levels = load_adapter(warehouse.source).levels
    for ds in days:
        doc = docs.get(ds)
        if doc is not None:  # a night's page gets the charts (nightrec/report_charts.py); a bootstrap day's does not
            charts = charts_html(warehouse, levels, ds, docs) if is_night(doc) else ""
            write_text_atomic(root / f"ds={ds.isoformat()}.html", render_html(doc, charts))
    write_text_atomic(root / "index.html", render_index([d for d in docs.values() if d is not None]))
    return root / "index.html"


def render_html(doc: dict[str, Any], charts: str = "") -> str:
    rows = "\n".join(
        f"<tr><th>{html.escape(title)}</th><td>{'<br>'.join(html.escape(line) for line in section)}</td></tr>"
        for title, section in _sections(doc)
    )
    body = (
        f"<h1>{html.escape(_header(doc))}</h1>\n<table>\n{rows}\n</table>\n"
        '<p><a href="index.html">every day</a> · <a href="../gx/index.html">Data Docs</a> · '
        '<a href="../dbt/index.html">dbt docs</a></p>\n' + charts
    )
    return _page(f"nightrec run {doc.get('ds')}", body)


def render_index(docs: list[dict[str, Any]]) -> str:
    """One row per day, newest first: the reconciliation, quality per boundary, models published, top-k version."""
    head = "<tr><th>day</th><th>DAG</th><th>latest attempt</th><th>raw</th><th>bronze</th><th>quarantined</th>"
    head += "<th>reconciled</th>"
    head += "<th>quality raw/bronze/marts</th><th>models published</th><th>lists</th><th>top-k</th></tr>"
    rows = []
    for doc in sorted(docs, key=lambda d: d["ds"], reverse=True):
        st = doc.get("stages", {})
        ing = st.get("ingest_events") or {}
        counts = [ing.get(k, "") for k in ("raw_rows", "bronze_rows", "quarantined_rows")]
        training = st.get("training") or {}
        published = ", ".join(sorted(n for n, m in training.get("models", {}).items() if m["published"]))
        topk = (st.get("topk") or {}).get("counts", {}).get("model_version", "")
        link = f'<a href="ds={html.escape(doc["ds"])}.html">{html.escape(doc["ds"])}</a>'
        cells = [
            (st.get("airflow") or {}).get("dag_id", ""),
            attempt_mark(doc.get("attempt")),
            *[f"{c:,}" if isinstance(c, int) else "" for c in counts],
            ("yes" if reconciles(ing) else "NO") if ing else "",
            quality_marks(st),
            (published or "none") if "models" in training else training.get("skipped", ""),
            ((st.get("ranker") or {}).get("lists") or {}).get("lists", ""),
            topk,
        ]
        rows.append(f"<tr><td>{link}</td>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    source = html.escape(str(docs[0].get("source"))) if docs else ""
    body = f"<h1>nightrec runs {source}</h1>\n<table>\n{head}\n" + "\n".join(rows) + "\n</table>"
    return _page("nightrec runs", body)


def _page(title: str, body: str) -> str:
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top;font-size:14px}"
        ".charts{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}figcaption{font-size:14px;font-weight:bold}"
    )
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def quality_marks(stages: dict[str, Any]) -> str:
    """raw/bronze/marts, each ok / warn (warnings recorded) / FAIL (a critical expectation) / - (not run)."""
    marks = []
    for boundary in BOUNDARIES:
        q = stages.get(f"quality_{boundary}")
        marks.append("-" if q is None else "FAIL" if not q["success"] else "warn" if q["warnings"] else "ok")
    return "/".join(marks)


def _header(doc: dict[str, Any]) -> str:
    """The day and the Airflow run it is about: the latest attempt, else the run that last completed it."""
    airflow = doc.get("attempt") or doc.get("stages", {}).get("airflow")
    header = f"Run of {doc.get('source')} for {doc.get('ds')}"
    return header + (f" (Airflow {airflow.get('dag_id', '')}, {airflow['run_id']})" if airflow else "")


# the manifest sections behind each section of the report
SECTION_STAGES = {
    "land": ("land",),
    "ingest": ("ingest_events",),
    "sequences": ("build_sequences",),
    "quality": tuple(f"quality_{b}" for b in BOUNDARIES),
    "features": ("feast_materialize",),
    "training": ("training",),
    "lists": ("ranker",),
    "top-k": ("topk",),
    "segments": ("consumer_encoder", "segments"),
    "audiences": ("audiences",),
    "retention": ("retention",),
}


def _sections(doc: dict[str, Any]) -> list[tuple[str, list[str]]]:
    stages: dict[str, Any] = doc.get("stages", {})
    sections = [
        ("land", _land(stages.get("land"), str(doc.get("source")))),
        ("ingest", _ingest(stages.get("ingest_events"))),
        ("sequences", _sequences(stages.get("build_sequences"))),
        ("quality", _quality(stages)),
        ("features", _features(stages.get("feast_materialize"))),
        ("training", _training(stages.get("training"))),
        ("lists", _lists(stages.get("ranker"))),
        ("top-k", _topk(stages.get("topk"))),
        ("segments", _segments(stages.get("consumer_encoder"), stages.get("segments"))),
        ("audiences", _audiences(stages.get("audiences"))),
        ("retention", _retention(stages.get("retention"))),
    ]
    attempt = doc.get("attempt")
    if attempt is None:
        return sections
    if attempt.get("state") != "success":  # say which sections the unfinished attempt did not rewrite
        stale = stale_sections(doc)
        for title, lines in sections:
            keys = [k for k in SECTION_STAGES[title] if k in stale]
            if not keys:
                continue
            older = ", ".join(sorted({str(stale[k] or "jobs run outside Airflow") for k in keys}))
            which = "" if len(keys) == len(SECTION_STAGES[title]) else f"{', '.join(keys)}: "
            lines.append(f"({which}recorded by an earlier run, {older}; the latest attempt did not rewrite it)")
    return [("attempt", attempt_lines(attempt)), *sections]


def attempt_lines(attempt: dict[str, Any]) -> list[str]:
    """The day's latest attempt: running (or interrupted), succeeded, or failed in a task with its error."""
    run = f"{attempt.get('dag_id', 'Airflow')} {attempt['run_id']}"
    state = attempt.get("state")
    if state == "success":
        lines = [f"succeeded: {run}, ended {attempt.get('ended_at')}"]
        if earlier := attempt.get("recovered_from"):
            task = earlier.get("failed_task") or "no task"
            lines.append(f"(after it was {earlier.get('state', 'failed').upper()} in {task}: {error_line(earlier)})")
        return lines
    if state == "failed":
        failed = f"FAILED in task {attempt.get('failed_task')}: {run}, ended {attempt.get('ended_at')}"
        return [failed, error_line(attempt)]
    if state == "stopped":
        task = attempt.get("failed_task") or "no task"
        return [f"STOPPED before it ended (in {task}): {run}, at {attempt.get('ended_at')}", error_line(attempt)]
    return [f"running since {attempt.get('started_at')}: {run} (no end recorded: still going, or interrupted)"]


def error_line(attempt: dict[str, Any]) -> str:
    """The first line of a failed attempt's error (the quality sections and the task log hold the rest)."""
    lines = (attempt.get("error") or "").strip().splitlines()
    return lines[0] if lines else "(no message)"


def attempt_mark(attempt: dict[str, Any] | None) -> str:
    """One word for tables: ok, FAILED:<task>, STOPPED, running, or - when no attempt is recorded."""
    if attempt is None:
        return "-"
    state = attempt.get("state")
    if state == "failed":
        return f"FAILED:{attempt.get('failed_task')}"
    return {"success": "ok", "stopped": "STOPPED"}.get(state or "", "running")


def outside_message(source: str, outside: dict[str, int], history: tuple[date, date] | None) -> str:
    """One line on the history file's rows outside the source's history, with where to change it."""
    rows = sum(outside.values())
    days = ", ".join(f"{n:,} on {d}" for d, n in list(outside.items())[:5]) + (", ..." if len(outside) > 5 else "")
    span = f" [{history[0]}, {history[1]}]" if history else ""
    return (
        f"{rows:,} row(s) of the history file lie outside the history{span} and are not landed ({days}; days are "
        f"UTC days of the event time): widen history.start/history.end in conf/sources/{source}.yaml to land them"
    )


def _land(s: dict[str, Any] | None, source: str) -> list[str]:
    if not s:
        return [NOT_RUN]
    lines = [f"{s['by']}: " + ", ".join(f"{f['file']} {f['status']} ({f['rows']:,} rows)" for f in s["files"])]
    lines.extend(f"{f['file']}: {f['reason']}" for f in s["files"] if f.get("reason"))
    if s.get("outside_history"):
        lines.append(outside_message(source, s["outside_history"], None))
    return lines


def _ingest(s: dict[str, Any] | None) -> list[str]:
    if not s:
        return [NOT_RUN]
    verdict = "reconciled" if reconciles(s) else f"NOT RECONCILED ({accounted_rows(s)} accounted for)"
    lines = [
        f"{s['raw_rows']:,} raw rows = {s['bronze_rows']:,} bronze + {s['quarantined_rows']:,} quarantined + "
        f"{s['redelivered_rows']:,} re-delivered"
        + (f" + {s['forgotten_rows']:,} forgotten on request" if s.get("forgotten_rows") else "")
        + f": {verdict}"
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
    for boundary in BOUNDARIES:
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
        f"validated on [{split['validation'][0]}, {split['validation'][1]}), evaluated on "
        f"[{split['evaluation'][0]}, {split['evaluation'][1]})"
    ]
    for name, m in sorted(s["models"].items()):
        state = "published" if m["published"] else "champion kept"
        lines.append(f"{name:<10} {m['metric']} {m['value']:.4f}  {state}: {m['reason']}")
    return lines


LIST_METRICS = ("recall@20", "ndcg@20")


def _lists(s: dict[str, Any] | None) -> list[str]:
    """The ranker's run: every list (ranker, baselines, models) on the same held-out window at both horizons, the
    champion gate and what the night publishes."""
    if not s:
        return [NOT_RUN]
    if "skipped" in s:
        return [f"skipped: {s['skipped']}"]
    t = s["training"]
    lines = [
        f"ranker {s['version']} in {s['seconds']} s: evaluated booster on {len(t['held_out']['anchors'])} anchors "
        f"({t['held_out']['purchases']:,} purchases), published booster on {len(t['served']['anchors'])} "
        f"({t['served']['purchases']:,})",
        f"{'list':<16} {'recall@20/ndcg@20, next 30 days':>32} {'next 7 days, refreshed':>24}",
    ]
    published = (s.get("lists") or {}).get("lists")
    order = ["ranker", "popularity", "own_history", "covisitation"]  # then the models' own lists
    for name in sorted(s["metrics"], key=lambda n: (order.index(n) if n in order else len(order), n)):
        row = s["metrics"][name]
        cells = [
            "/".join(f"{row[h][m]:.4f}" for m in LIST_METRICS) + f" ({row[h]['users']:,})" if h in row else "-"
            for h in ("30d", "7d")
        ]
        mark = "*" if name == published else " "
        lines.append(f"{name + mark:<16} {cells[0]:>32} {cells[1]:>24}")
    gate = s["gate"]
    lines.append(f"champion gate: {'published' if gate['publish'] else 'champion kept'}: {gate['reason']}")
    if s.get("lists"):
        lines.append(f"publishes {s['lists']['lists']} (*): {s['lists']['reason']}")
        if "cold_start" in s["lists"]:
            lines.append(f"users without a list get {s['lists']['cold_start']}: {s['lists']['cold_start_reason']}")
    return lines


def _topk(s: dict[str, Any] | None) -> list[str]:
    if not s:
        return [NOT_RUN]
    if "counts" not in s:
        return [f"nothing published: {s.get('skipped', 'no lists scored')}"]
    c = s["counts"]
    eligible = f", {c['items']:,} items eligible" if "items" in c else ""
    lines = [
        f"{c['model_version']}: {c['rows']:,} rows for {c['users']:,} users (k {c['k']}, "
        f"{c['cold_start_users']:,} cold-start users on popular items){eligible}",
        f"current -> {s['current']}; online store: {s.get('online_users', 0):,} users",
    ]
    if c.get("lists") == "popular":  # no model to rank with: the fallback for everyone, and why
        lines.insert(1, f"the popular list for every user: {c.get('reason', '')}")
    return lines


def _segments(encoder: dict[str, Any] | None, s: dict[str, Any] | None) -> list[str]:
    """The consumer encoder's night, the segments (how k was chosen, stability), each segment's size and label."""
    if not encoder and not s:
        return [NOT_RUN]
    lines = []
    if encoder and "skipped" in encoder:
        lines.append(f"encoder skipped: {encoder['skipped']}")
    elif encoder:
        validation = encoder.get("validation_recall@10x")
        alignment = encoder.get("alignment", {})
        lines.append(
            f"encoder {encoder['version']}: {encoder['consumers']:,} consumers, epoch {encoder['best_epoch']} kept"
            + (f" (validation lookalike recall@10x {validation:.3f})" if validation is not None else "")
            + (
                f", continued from {alignment['previous_night']} (mean cosine to it "
                f"{alignment['mean_cosine_to_previous']:.3f})"
                if alignment.get("aligned")
                else ", from a random start"
            )
            + f", {encoder['seconds']} s on {encoder['device']}"
        )
    if not s or "k" not in s:
        published = (s or {}).get("published", {})
        lines.append(f"no segments: {published.get('skipped', 'the segments job did not run')}")
        return lines
    tried = ", ".join(f"{name} {value:.3f}" for name, value in s["silhouettes"].items())
    if "fresh_starts" in s:  # nights before kmeans_starts recorded one start
        starts = s["fresh_starts"]
        tried += f"; k={starts['k']} the best of {len(starts['costs'])} starts"
    lines.append(
        f"{s['k']} segments of {s['consumers']:,} consumers: {s['clustering']} (silhouette {s['silhouette']:.3f}; "
        f"tried {tried})"
    )
    if s.get("ari") is not None:
        lines.append(f"stability: ARI {s['ari']:.3f} with {s['previous_night']} on {s['common_consumers']:,} consumers")
    else:
        lines.append("stability: first night with segments, nothing to compare")
    for segment_id, size in s["sizes"].items():
        share = size / s["consumers"] if s["consumers"] else 0.0
        lines.append(f"segment {segment_id:>3}: {size:>7,} ({share:.1%})  {s['labels'].get(segment_id, '')}")
    published = s.get("published", {})
    if published.get("marts"):
        lines.append(
            "marts: "
            + ", ".join(f"{name} {rows:,} rows" for name, rows in published["marts"].items())
            + f"; online store (user_segments): {published.get('online_users', 0):,} users"
        )
    return lines


def _retention(s: dict[str, Any] | None) -> list[str]:
    if s is None:
        return ["not run on this day"]
    if s.get("skipped"):
        return [f"skipped: {s['skipped']}"]
    if not s.get("days"):
        return ["off (retention.days = 0): every version kept"]
    removed = ", ".join(f"{zone} {n}" for zone, n in s.get("removed", {}).items()) or "nothing"
    return [f"{s['days']} days (kept from {s.get('cutoff')}): removed {removed}"]


def _audiences(s: dict[str, Any] | None) -> list[str]:
    """Each saved audience: seed and audience size, how well it found hidden seed members, or why it failed."""
    if not s:
        return [NOT_RUN]
    if "skipped" in s:
        return [f"skipped: {s['skipped']}"]
    if not s["audiences"]:
        return [f"no saved audiences ({s['file']})"]
    lines = []
    for name, a in s["audiences"].items():
        if "error" in a:
            lines.append(f"{name}: FAILED: {a['error']}")
            continue
        evaluation = sorted(a["evaluation"].items(), key=lambda item: int(item[0]))
        found = ", ".join(f"{m}x {e['recall']:.3f} (random {e['random']:.3f})" for m, e in evaluation)
        tenth = SHARES[1]  # the audience share the lookalike benchmark's summary uses
        share = a.get("at_share", {}).get(str(tenth))
        if found and share:
            found += (
                f"; in {tenth:.0%} of consumers {share['recall']:.3f} (random {tenth:.3f}, best {share['best']:.3f})"
            )
        lines.append(
            f"{name}: seed {a['seed']:,}, {a['expanded']:,} alike ({a['size']}x); hidden seed members found: "
            + (found or "seed too small to measure")
        )
    return lines
