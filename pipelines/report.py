"""The campaign report: one self-contained HTML file with matplotlib charts embedded as PNG.

Sections: segment sizes and exclusions, campaign funnels, engagement over time,
deliverability (by recipient domain when the warehouse records it, else by audience) and
journey drop-off. Everything is read from the marts (aggregates: no person tokens, no
dates of a person), so the file can be mailed around. A section whose marts are not built
says how to build them instead of failing. Charts are also offered to Dagster assets as
markdown metadata (`chart_markdown`).
"""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

BUILD_HINT = "run the full_pipeline job (or `make demo`) to build the marts"
PALETTE = ["#1f6feb", "#2da44e", "#bf8700", "#cf222e", "#8250df", "#57606a", "#0a7b83"]
MAX_AUDIENCES = 14


@dataclass
class Section:
    title: str
    chart: str | None = None  # base64 PNG
    table: list[dict[str, Any]] = field(default_factory=list)
    note: str | None = None


@dataclass
class Report:
    generated_at: datetime
    sections: list[Section]

    @property
    def charts(self) -> int:
        return sum(1 for s in self.sections if s.chart)

    def section(self, title: str) -> Section:
        return next(s for s in self.sections if s.title == title)


# --- reading the marts -----------------------------------------------------------------------


def _query(conn: psycopg.Connection, sql: str, params: Sequence[Any] = ()) -> list[tuple] | None:
    """Rows, or None when a relation is missing (marts not built yet)."""
    try:
        with conn.transaction():
            return conn.execute(sql, params).fetchall()
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn):
        return None


def _has_column(conn: psycopg.Connection, schema: str, table: str, column: str) -> bool:
    row = conn.execute(
        "select 1 from information_schema.columns"
        " where table_schema = %s and table_name = %s and column_name = %s",
        (schema, table, column),
    ).fetchone()
    return row is not None


def build_report(conn: psycopg.Connection) -> Report:
    """Read the marts and draw every chart."""
    return Report(
        datetime.now(UTC),
        [
            _segments(conn),
            _funnels(conn),
            _engagement_over_time(conn),
            _deliverability(conn),
            _journeys(conn),
        ],
    )


def _segments(conn: psycopg.Connection) -> Section:
    section = Section("Segment sizes and exclusions")
    sizes = _query(
        conn,
        "select c.audience, c.purpose, count(m.person_token)"
        " from marts.segment_catalog c left join marts.audience_membership m"
        " on m.audience = c.audience group by 1, 2 order by 1",
    )
    exclusions = _query(
        conn, "select audience, reason, persons from marts.audience_exclusions order by 1, 2"
    )
    if sizes is None:
        section.note = f"No segment marts yet: {BUILD_HINT}."
        return section
    excluded: dict[str, dict[str, int]] = defaultdict(dict)
    for audience, reason, persons in exclusions or []:
        excluded[audience][reason] = int(persons)
    section.table = [
        {
            "audience": audience,
            "purpose": purpose,
            "members": int(members),
            "excluded": sum(excluded[audience].values()),
            "excluded by reason": ", ".join(
                f"{r} {n}" for r, n in sorted(excluded[audience].items())
            ),
        }
        for audience, purpose, members in sizes
    ]
    reasons = sorted({r for counts in excluded.values() for r in counts})
    labels = [row["audience"] for row in section.table]
    series = {"members": [row["members"] for row in section.table]}
    for reason in reasons:
        series[f"excluded: {reason}"] = [excluded[a].get(reason, 0) for a in labels]
    section.chart = _stacked_barh(labels, series, "people")
    return section


def _funnels(conn: psycopg.Connection) -> Section:
    section = Section("Campaign funnels")
    rows = _query(
        conn,
        "select audience, sent, delivered, opens, clicks from marts.agg_engagement_by_audience"
        " where audience is not null order by sent desc, audience limit %s",
        (MAX_AUDIENCES,),
    )
    if rows is None:
        section.note = f"No engagement marts yet: {BUILD_HINT}."
        return section
    if not rows:
        section.note = "No engagement events read back yet."
        return section
    steps = ["sent", "delivered", "opens", "clicks"]
    section.table = [dict(zip(["audience", *steps], map(_plain, row), strict=True)) for row in rows]
    labels = [row["audience"] for row in section.table]
    section.chart = _grouped_barh(labels, {s: [r[s] for r in section.table] for s in steps})
    section.note = "Opens are human opens (privacy-proxy prefetches excluded)."
    return section


def _engagement_over_time(conn: psycopg.Connection) -> Section:
    section = Section("Engagement over time")
    span = _query(conn, "select min(occurred_at), max(occurred_at) from marts.fct_email_events")
    if span is None:
        section.note = f"No engagement marts yet: {BUILD_HINT}."
        return section
    first, last = span[0]
    if first is None:
        section.note = "No engagement events read back yet."
        return section
    grain = "day" if (last - first).days >= 3 else "hour"
    rows = _query(
        conn,
        f"select date_trunc('{grain}', occurred_at) as at, event_type, count(*)"
        " from marts.fct_email_events where not coalesce(machine_open, false)"
        " group by 1, 2 order by 1, 2",
    )
    by_type: dict[str, dict[datetime, int]] = defaultdict(dict)
    for at, event_type, count in rows or []:
        by_type[event_type][at] = int(count)
    section.chart = _lines(by_type, f"events per {grain}")
    section.table = [
        {"event type": kind, "events": sum(points.values())} for kind, points in by_type.items()
    ]
    return section


def _deliverability(conn: psycopg.Connection) -> Section:
    section = Section("Deliverability")
    domain_source = None
    for schema, table in (("marts", "fct_email_events"), ("engagement", "events")):
        if _has_column(conn, schema, table, "recipient_domain"):
            domain_source = f"{schema}.{table}"
            break
    rows = None
    if domain_source:
        rows = _query(
            conn,
            "select recipient_domain,"
            " count(*) filter (where event_type = 'delivered'),"
            " count(*) filter (where event_type = 'bounce'),"
            " count(*) filter (where event_type = 'complaint')"
            f" from {domain_source} where recipient_domain is not null"
            " group by 1 order by 2 + 3 desc, 1 limit %s",
            (MAX_AUDIENCES,),
        )
    label = "recipient domain"
    if rows:
        section.title = "Deliverability by domain"
    else:
        label = "audience"
        rows = _query(
            conn,
            "select audience, delivered, bounces, complaints from marts.agg_engagement_by_audience"
            " where audience is not null order by sent desc, audience limit %s",
            (MAX_AUDIENCES,),
        )
        section.title = "Deliverability by audience"
        section.note = (
            "Recipient domains are not recorded in this warehouse yet, so deliverability is"
            " shown by audience."
        )
    if rows is None:
        section.note = f"No engagement marts yet: {BUILD_HINT}."
        return section
    if not rows:
        section.note = (section.note or "") + " No deliveries read back yet."
        return section
    section.table = [
        {
            label: name,
            "delivered": int(delivered),
            "bounced": int(bounced),
            "complaints": int(complaints),
            "bounce rate": _rate(bounced, delivered + bounced),
        }
        for name, delivered, bounced, complaints in rows
    ]
    labels = [row[label] for row in section.table]
    section.chart = _stacked_barh(
        labels,
        {
            "delivered": [r["delivered"] for r in section.table],
            "bounced": [r["bounced"] for r in section.table],
            "complaints": [r["complaints"] for r in section.table],
        },
        "messages",
    )
    return section


def _journeys(conn: psycopg.Connection) -> Section:
    section = Section("Journey drop-off")
    rows = _query(
        conn,
        "select journey, step, step_order, kind, entries, completions, currently_at, drop_off,"
        " sends, opens, clicks from marts.journey_step_metrics order by journey, step_order",
    )
    if rows is None:
        section.note = f"No journey marts yet: {BUILD_HINT} (they follow the journeys asset)."
        return section
    if not rows:
        section.note = "No journey has run yet."
        return section
    names = ["journey", "step", "order", "kind", "entries", "completions", "waiting", "drop-off"]
    names += ["sends", "opens", "clicks"]
    section.table = [dict(zip(names, map(_plain, row), strict=True)) for row in rows]
    section.chart = journey_funnel_chart(
        [(r["journey"], r["step"], r["order"], r["entries"], r["drop-off"]) for r in section.table]
    )
    section.note = (
        "Entries: people who reached the step; drop-off: people whose journey ended there"
        " without completing it (exit condition, consent, engine rejection)."
    )
    return section


def _plain(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


def _rate(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


# --- charts --------------------------------------------------------------------------------


def _figure(height: float):
    import matplotlib

    matplotlib.use("Agg")  # headless: no display, same output everywhere
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(9, height), dpi=100)
    axes.spines[["top", "right"]].set_visible(False)
    return figure, axes


def _png(figure) -> str:
    from matplotlib import pyplot as plt

    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _stacked_barh(labels: list[str], series: dict[str, list[int]], unit: str) -> str:
    figure, axes = _figure(1.2 + 0.42 * len(labels))
    left = [0] * len(labels)
    for index, (name, values) in enumerate(series.items()):
        axes.barh(labels, values, left=left, label=name, color=PALETTE[index % len(PALETTE)])
        left = [a + b for a, b in zip(left, values, strict=True)]
    axes.invert_yaxis()
    axes.set_xlabel(unit)
    axes.legend(loc="lower right", fontsize=8, frameon=False)
    return _png(figure)


def _grouped_barh(labels: list[str], series: dict[str, list[Any]]) -> str:
    figure, axes = _figure(1.2 + 0.6 * len(labels))
    height = 0.8 / max(len(series), 1)
    for index, (name, values) in enumerate(series.items()):
        positions = [i + index * height for i in range(len(labels))]
        axes.barh(positions, values, height=height, label=name, color=PALETTE[index])
    axes.set_yticks([i + 0.4 - height / 2 for i in range(len(labels))], labels, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("events")
    axes.legend(loc="lower right", fontsize=8, frameon=False)
    return _png(figure)


def _lines(by_type: dict[str, dict[datetime, int]], unit: str) -> str:
    figure, axes = _figure(3.6)
    for index, (kind, points) in enumerate(sorted(by_type.items())):
        times = sorted(points)
        color = PALETTE[index % len(PALETTE)]
        values = [points[t] for t in times]
        axes.plot(times, values, marker="o", markersize=3, label=kind, color=color)
    axes.set_ylabel(unit)
    axes.legend(fontsize=8, frameon=False, ncol=4)
    figure.autofmt_xdate()
    return _png(figure)


def journey_funnel_chart(rows: Sequence[Sequence[Any]]) -> str | None:
    """Entries per step, one panel per journey; rows: (journey, step, order, entries[, drop])."""
    by_journey: dict[str, list[Sequence[Any]]] = defaultdict(list)
    for row in rows:
        by_journey[row[0]].append(row)
    if not by_journey:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    longest = max(len(steps) for steps in by_journey.values())
    figure, panels = plt.subplots(
        len(by_journey), 1, figsize=(9, 0.9 + (0.38 * longest + 0.6) * len(by_journey)), dpi=100
    )
    panels = panels if len(by_journey) > 1 else [panels]
    for axes, (journey, steps) in zip(panels, sorted(by_journey.items()), strict=True):
        steps = sorted(steps, key=lambda r: r[2])
        labels = [str(r[1]) for r in steps]
        entries = [int(r[3] or 0) for r in steps]
        axes.barh(labels, entries, color=PALETTE[0], label="entries")
        if all(len(r) > 4 for r in steps):
            axes.barh(labels, [int(r[4] or 0) for r in steps], color=PALETTE[3], label="drop-off")
            axes.legend(loc="lower right", fontsize=8, frameon=False)
        axes.invert_yaxis()
        axes.set_title(journey, fontsize=10, loc="left")
        axes.spines[["top", "right"]].set_visible(False)
        axes.tick_params(labelsize=8)
    return _png(figure)


def chart_markdown(chart: str | None, title: str) -> str:
    """Markdown with the chart inline (for Dagster metadata), or a line saying there is none."""
    if not chart:
        return f"_{title}: nothing to chart yet_"
    return f"**{title}**\n\n![{title}](data:image/png;base64,{chart})"


# --- HTML ----------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1000px; color: #1f2328; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2.2rem; }
img.chart { max-width: 100%; border: 1px solid #d0d7de; border-radius: 6px; }
table { border-collapse: collapse; font-size: .85rem; margin-top: .8rem; }
th, td { border-bottom: 1px solid #d0d7de; padding: .25rem .6rem; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
p.note { color: #57606a; font-size: .9rem; }
"""


def render_html(report: Report) -> str:
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>audience-hub campaign report</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>audience-hub campaign report</h1>",
        f'<p class="note">Generated {report.generated_at:%Y-%m-%d %H:%M} UTC from the marts.'
        " Aggregates only: no person-level data.</p>",
    ]
    for section in report.sections:
        parts.append(f"<section><h2>{html.escape(section.title)}</h2>")
        if section.chart:
            parts.append(
                f'<img class="chart" alt="{html.escape(section.title)} chart"'
                f' src="data:image/png;base64,{section.chart}">'
            )
        if section.note:
            parts.append(f'<p class="note">{html.escape(section.note)}</p>')
        if section.table:
            parts.append(_table(section.table))
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _table(rows: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = []
    for row in rows:
        cells = []
        for value in row.values():
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            css = ' class="n"' if numeric else ""
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            cells.append(f"<td{css}>{html.escape(shown)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def write_report(conn: psycopg.Connection, path: Path) -> Report:
    """Build the report and write it to `path` (folders created); returns what was drawn."""
    report = build_report(conn)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report), encoding="utf-8")
    return report
