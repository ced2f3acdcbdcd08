"""The run report's charts: static SVG drawn with matplotlib inside each night's page (no server, no script).

Per night: every list's and baseline's Recall@20 over the nights, each trained model's gate metric over the nights,
the level funnel of the last 30 days, quarantined rows by reason over the last 60 days, the Lorenz curve of item
exposure in the lists served that night, segment sizes and night-to-night stability, and a few users' recent history
beside the list they were served. Everything is read from the run manifests and the warehouse's tables, so a page
can be drawn again at any time (`nightrec forget` redraws them: an example user may be one it removed).

The SVG is deterministic (fixed id salt, no date), so drawing a night again gives the same page.
"""

from __future__ import annotations

import hashlib
import html
import io
import logging
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from nightrec.warehouse import Warehouse

log = logging.getLogger(__name__)

HISTORY_DAYS = 60  # how far back the over-time charts look
FUNNEL_DAYS = 30
EXAMPLE_USERS = 3
EXAMPLE_EVENTS = 10  # of a user's recent history
EXAMPLE_LIST = 10  # of the list served to them
HORIZON = "30d"  # the list metrics' evaluation horizon the chart shows

Chart = Callable[[], Any]  # draws on a matplotlib figure it returns, or None when there is nothing to draw


def gini(counts: list[int]) -> float:
    """The Gini coefficient of how often each item is shown (0: every item equally often; near 1: one item)."""
    values = sorted(c for c in counts if c > 0)
    n, total = len(values), sum(values)
    if n == 0 or total == 0:
        return 0.0
    weighted = sum((i + 1) * v for i, v in enumerate(values))
    return (2 * weighted) / (n * total) - (n + 1) / n


def is_night(doc: dict[str, Any]) -> bool:
    """Whether the day's run was a nightly run (trained, listed or segmented): the days that get charts."""
    stages = doc.get("stages") or {}
    return any(k in stages for k in ("ranker", "topk", "segments", "training"))


def charts_html(warehouse: Warehouse, levels: dict[str, int], ds: date, docs: dict[date, dict[str, Any]]) -> str:
    """The charts and the example users of night ``ds``, as HTML to put in its page. A chart that cannot be drawn says
    why in its place (and in the log) instead of failing the run's last task."""
    before = {
        d: doc for d, doc in sorted(docs.items()) if doc is not None and ds - timedelta(days=HISTORY_DAYS) < d <= ds
    }
    parts = ['<h2>Charts</h2>\n<div class="charts">']
    tonight = before.get(ds) or {}
    charts: list[tuple[str, Chart, str]] = [  # title, drawing, HTML under it
        (f"Recall@20 of every list over the nights ({HORIZON} after each anchor)", lambda: _list_metrics(before), ""),
        ("Each trained model's gate metric over the nights", lambda: _model_metrics(before), ""),
        (
            f"Level funnel: users reaching each level, {FUNNEL_DAYS} days to {ds}",
            lambda: _funnel(warehouse, levels, ds),
            "",
        ),
        (f"Quarantined rows by reason, {HISTORY_DAYS} days", lambda: _quarantine(before), ""),
        ("Item exposure in the lists served", lambda: _lorenz(warehouse, tonight), ""),
        (
            "Segment sizes, and stability against the night before",
            lambda: _segments(before, ds),
            _segment_labels(tonight),
        ),
    ]
    for title, draw, note in charts:
        try:
            figure = draw()
            body = _svg(figure) if figure is not None else "<p>nothing to draw yet</p>"
        except Exception as exc:  # a chart is not worth the night: said on the page and in the log
            log.warning(f"run report chart '{title}' for {ds}: {type(exc).__name__}: {exc}")
            body = f"<p>not drawn: {html.escape(type(exc).__name__)}: {html.escape(str(exc))}</p>"
        parts.append(f"<figure><figcaption>{html.escape(title)}</figcaption>\n{body}{note}\n</figure>")
    parts.append("</div>")
    try:
        parts.append(_examples(warehouse, levels, ds, tonight))
    except Exception as exc:  # as above
        log.warning(f"run report examples for {ds}: {type(exc).__name__}: {exc}")
        parts.append(f"<p>example users not shown: {html.escape(str(exc))}</p>")
    return "\n".join(parts)


def _svg(figure: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    with plt.rc_context({"svg.hashsalt": "nightrec", "svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # inline: without the XML declaration and doctype


def _figure(width: float = 6.0, height: float = 3.2) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")  # files only, whatever the environment asks for
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(width, height))
    axes.grid(alpha=0.3)
    return figure, axes


def _days_axis(axes: Any, days: list[date]) -> None:
    """Dates as days (not hours) on the x axis; every night's tick while there are few."""
    import matplotlib.dates as mdates

    axes.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
    if len(set(days)) <= 10:
        axes.set_xticks(sorted(set(days)))
    if len(set(days)) == 1:
        axes.set_xlim(days[0] - timedelta(days=1), days[0] + timedelta(days=1))
    for label in axes.get_xticklabels():
        label.set_rotation(30)
        label.set_horizontalalignment("right")


def _over_nights(series: dict[str, list[tuple[date, float]]], ylabel: str) -> Any:
    if not series:
        return None
    figure, axes = _figure()
    for name, points in sorted(series.items()):
        days, values = zip(*points, strict=True)
        axes.plot(days, values, marker="o", label=name)
    axes.set_ylabel(ylabel)
    axes.legend(fontsize=7, ncol=2)
    _days_axis(axes, [d for points in series.values() for d, _ in points])
    return figure


def _list_metrics(docs: dict[date, dict[str, Any]]) -> Any:
    series: dict[str, list[tuple[date, float]]] = {}
    published = None
    for day, doc in docs.items():
        ranker = (doc.get("stages") or {}).get("ranker") or {}
        published = (ranker.get("lists") or {}).get("lists") or published
        for name, horizons in (ranker.get("metrics") or {}).items():
            value = (horizons.get(HORIZON) or {}).get("recall@20")
            if value is not None:
                series.setdefault(name, []).append((day, value))
    if published in series:  # the latest night's published lists, as the legend says
        series[f"{published} (published)"] = series.pop(published)
    return _over_nights(series, "Recall@20")


def _model_metrics(docs: dict[date, dict[str, Any]]) -> Any:
    series: dict[str, list[tuple[date, float]]] = {}
    for day, doc in docs.items():
        for name, model in (((doc.get("stages") or {}).get("training") or {}).get("models") or {}).items():
            series.setdefault(f"{name} ({model['metric']})", []).append((day, model["value"]))
    return _over_nights(series, "validation metric")


def _funnel(warehouse: Warehouse, levels: dict[str, int], ds: date) -> Any:
    import duckdb

    files = warehouse.bronze_events() / "ds=*" / "*.parquet"
    if not list(warehouse.bronze_events().glob("ds=*/*.parquet")):
        return None
    first = ds - timedelta(days=FUNNEL_DAYS - 1)
    rows = duckdb.sql(
        f"select top, count(*) from (select user_id, max(level) as top from read_parquet('{files}', "
        f"hive_partitioning = true) where ds between date '{first}' and date '{ds}' group by user_id) group by top"
    ).fetchall()
    if not rows:
        return None
    at_least = {level: sum(n for top, n in rows if top >= level) for level in sorted(set(levels.values()))}
    names = {v: k for k, v in sorted(levels.items(), key=lambda kv: kv[0], reverse=True)}  # one word per level
    figure, axes = _figure(height=0.5 + 0.45 * len(at_least))
    order = sorted(at_least, reverse=True)
    bars = axes.barh([names[level] for level in order], [at_least[level] for level in order], color="#4c72b0")
    base = max(at_least.values()) or 1
    for bar, level in zip(bars, order, strict=True):
        axes.text(
            bar.get_width(),
            bar.get_y() + bar.get_height() / 2,
            f" {at_least[level]:,} ({at_least[level] / base:.0%})",
            va="center",
            fontsize=8,
        )
    axes.set_xlabel("users whose strongest behaviour reached at least this level")
    return figure


def _quarantine(docs: dict[date, dict[str, Any]]) -> Any:
    reasons: dict[str, dict[date, int]] = {}
    for day, doc in docs.items():
        ingest = (doc.get("stages") or {}).get("ingest_events") or {}
        for reason, n in (ingest.get("quarantine_reasons") or {}).items():
            reasons.setdefault(reason, {})[day] = n
    if not reasons:
        return None
    figure, axes = _figure()
    days = sorted(docs)
    bottom = [0] * len(days)
    for reason in sorted(reasons):
        counts = [reasons[reason].get(d, 0) for d in days]
        axes.bar(days, counts, bottom=bottom, label=reason)
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    axes.set_ylabel("rows quarantined")
    axes.legend(fontsize=7)
    figure.autofmt_xdate()
    return figure


def _served(warehouse: Warehouse, doc: dict[str, Any]) -> str | None:
    """The glob of the Parquet files of the list version served on the night (None when it published none)."""
    current = ((doc.get("stages") or {}).get("topk") or {}).get("current")
    if not current:
        return None
    folder = warehouse.serving_topk() / current
    return str(folder / "*.parquet") if list(folder.glob("*.parquet")) else None


def _lorenz(warehouse: Warehouse, doc: dict[str, Any]) -> Any:
    import duckdb

    served = _served(warehouse, doc)
    if served is None:
        return None
    counts = [
        n
        for (n,) in duckdb.sql(f"select count(*) from read_parquet('{served}') group by item_id order by 1").fetchall()
    ]
    if not counts:
        return None
    total, running, curve = sum(counts), 0, [0.0]
    for n in counts:
        running += n
        curve.append(running / total)
    share = [i / len(counts) for i in range(len(counts) + 1)]
    figure, axes = _figure(width=4.2, height=3.6)
    axes.plot(share, curve, label=f"the lists (Gini {gini(counts):.2f})")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="every item equally often")
    axes.set_xlabel(f"share of the {len(counts):,} items shown (least shown first)")
    axes.set_ylabel("share of all list slots")
    axes.legend(fontsize=7)
    return figure


def _segments(docs: dict[date, dict[str, Any]], ds: date) -> Any:
    tonight = ((docs.get(ds) or {}).get("stages") or {}).get("segments") or {}
    sizes = tonight.get("sizes") or {}
    if not sizes:
        return None
    figure, left = _figure(width=4.2, height=3.2)
    ids = sorted(sizes, key=int)
    left.bar(ids, [sizes[s] for s in ids], color="#55a868")
    left.set_xlabel("segment id (labels below)")
    left.set_ylabel("consumers")
    stability = [
        (d, seg["ari"])
        for d, doc in sorted(docs.items())
        if (seg := (doc.get("stages") or {}).get("segments") or {}).get("ari") is not None
    ]
    if stability:
        right = figure.add_axes((1.08, 0.1, 0.8, 0.8))
        days, ari = zip(*stability, strict=True)
        right.plot(days, ari, marker="o", color="#c44e52")
        right.set_ylim(0, 1.05)
        right.set_ylabel("adjusted Rand index vs the night before")
        right.grid(alpha=0.3)
        _days_axis(right, list(days))
    return figure


def _segment_labels(doc: dict[str, Any]) -> str:
    segments = (doc.get("stages") or {}).get("segments") or {}
    labels, sizes = segments.get("labels") or {}, segments.get("sizes") or {}
    if not labels:
        return ""
    items = "".join(
        f"<li>{html.escape(s)} ({sizes.get(s, 0):,}): {html.escape(str(labels[s]))}</li>"
        for s in sorted(labels, key=int)
    )
    return f"<ul>{items}</ul>"


def _examples(warehouse: Warehouse, levels: dict[str, int], ds: date, doc: dict[str, Any]) -> str:
    """A few users of the night's lists: their latest behaviour beside what they were served (items they already
    touched are marked), picked by a hash of id and night so each night shows others."""
    import duckdb

    served = _served(warehouse, doc)
    if served is None:
        return ""
    users = [u for (u,) in duckdb.sql(f"select distinct user_id from read_parquet('{served}')").fetchall()]
    chosen = sorted(users, key=lambda u: hashlib.sha256(f"{u}|{ds}".encode()).hexdigest())[:EXAMPLE_USERS]
    if not chosen:
        return ""
    names = {v: k for k, v in sorted(levels.items(), key=lambda kv: kv[0], reverse=True)}
    events = warehouse.bronze_events() / "ds=*" / "*.parquet"
    first = ds - timedelta(days=89)
    history = duckdb.execute(  # one line per item, behaviour and day (Tmall's day-grain rows repeat), newest first
        f"select user_id, item_id, level, ds, count(*) from read_parquet('{events}', hive_partitioning = true) "
        f"where ds between date '{first}' and date '{ds}' and user_id in (select unnest(?::varchar[])) "
        "group by all order by user_id, max(event_ts) desc, level desc, item_id",
        [chosen],
    ).fetchall()
    lists = duckdb.execute(
        f"select user_id, rank, item_id, sources from read_parquet('{served}') "
        f"where user_id in (select unnest(?::varchar[])) and rank <= {EXAMPLE_LIST} order by user_id, rank",
        [chosen],
    ).fetchall()
    rows = []
    for user in chosen:
        theirs = [(i, lv, d, n) for u, i, lv, d, n in history if u == user]
        touched = {i for i, *_ in theirs}
        recent = "<br>".join(
            f"{d} · {html.escape(names.get(lv, str(lv)))}{f' ×{n}' if n > 1 else ''} · item {html.escape(i)}"
            for i, lv, d, n in theirs[:EXAMPLE_EVENTS]
        )
        listed = "<br>".join(
            f"{rank}. item {html.escape(i)}{' ✓' if i in touched else ''}"
            + (f" <small>({html.escape(', '.join(s))})</small>" if s else "")
            for u, rank, i, s in lists
            if u == user
        )
        earlier = len(theirs) - EXAMPLE_EVENTS
        more = f"<br><small>and {earlier} earlier (item, behaviour, day) in 90 days</small>" if earlier > 0 else ""
        rows.append(
            f"<tr><td>{html.escape(user)}</td><td>{recent or 'no events in 90 days'}{more}</td><td>{listed}</td></tr>"
        )
    return (
        "<h2>Example users</h2>\n<p>Their latest behaviour (90 days, newest first) beside the first "
        f"{EXAMPLE_LIST} items of the list served; ✓ marks an item they touched before.</p>\n"
        "<table><tr><th>user</th><th>recent history</th><th>list served (sources)</th></tr>\n"
        + "\n".join(rows)
        + "\n</table>"
    )
