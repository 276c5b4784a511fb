"""The per-window drift report: one self-contained HTML page rendered from what a drift check found.

Pure: it renders from the check's summary, its test rows (`TestResult.row()`) and the reference
profile's parts, so the same page comes out of a test with no warehouse. The page carries its own
style and inline SVG and references nothing outside itself, so it opens offline, from a mail or a disk.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from html import escape
from pathlib import PurePosixPath
from typing import Any

from batchwatch.errors import InvalidArgument
from batchwatch.reporting.svg import category_shares, density_chart

WINDOW_FORMAT = "%Y%m%dT%H%MZ"
WINDOW_PATTERN = re.compile(r"^\d{8}T\d{4}Z$")

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1f2328; }
table { border-collapse: collapse; margin: 12px 0; } th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: right; }
th { background: #f6f8fa; } td.name { text-align: left; } tr.drifted td { background: #ffebe9; font-weight: 600; }
tr.insufficient_data td { color: #6e7781; } .status { font-weight: 700; } .status.drifted { color: #cf222e; }
.status.ok { color: #1a7f37; } svg.chart { width: 640px; max-width: 100%; height: auto; }
svg rect.reference { fill: #8fb8de; } svg rect.current { fill: none; stroke: #d97706; stroke-width: 1.5; }
svg line.axis { stroke: #57606a; } svg line.marker { stroke: #cf222e; stroke-dasharray: 4 2; }
svg line.marker.m0 { stroke: #0969da; } svg text { font-size: 10px; fill: #57606a; }
"""


def window_key(window_end: datetime) -> str:
    """The report's name for a window: its end in UTC, `YYYYMMDDTHHMMZ`."""
    if window_end.utcoffset() is None:
        raise InvalidArgument(f"window end must be timezone-aware, got {window_end!r}")
    return window_end.astimezone(timezone.utc).strftime(WINDOW_FORMAT)


def parse_window_key(text: str) -> datetime:
    """The window end a report name stands for; InvalidArgument unless it is exactly `YYYYMMDDTHHMMZ`."""
    if not WINDOW_PATTERN.fullmatch(text):
        raise InvalidArgument(f"window {text!r} is not of the form YYYYMMDDTHHMMZ (the window end in UTC, e.g. 20261103T0000Z)")
    try:
        return datetime.strptime(text, WINDOW_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError as error:
        raise InvalidArgument(f"window {text!r} is not a real date and time: {error}") from None


def report_relpath(model_name: str, window_end: datetime) -> PurePosixPath:
    """Where a window's report lives under the artifact root."""
    return PurePosixPath("reports", model_name, "drift", f"{window_key(window_end)}.html")


def _number(value: Any, fmt: str = "{:.4g}") -> str:
    return "–" if value is None else escape(fmt.format(value))


def _test_rows(tests: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for t in tests:
        verdict = str(t.get("verdict", ""))
        rows.append(
            f'<tr class="{escape(verdict)}"><td class="name">{escape(str(t["column_name"]))}</td><td class="name">{escape(str(t["test"]))}</td>'
            f"<td>{_number(t.get('statistic'))}</td><td>{_number(t.get('p_value'), '{:.3g}')}</td>"
            f"<td>{_number(t.get('p_adjusted'), '{:.3g}')}</td><td>{_number(t.get('effect_size'))}</td><td>{_number(t.get('threshold'))}</td>"
            f"<td>{_number(t.get('n_reference'), '{:,}')}</td><td>{_number(t.get('n_current'), '{:,}')}</td>"
            f'<td class="name">{escape(verdict)}</td></tr>'
        )
    head = "<tr><th>column</th><th>test</th><th>statistic</th><th>p</th><th>p adjusted (BH)</th><th>effect size</th>"
    return f'<table class="tests">{head}<th>threshold</th><th>n reference</th><th>n current</th><th>verdict</th></tr>{"".join(rows)}</table>'


def _reference_section(column: str, tests: Sequence[Mapping[str, Any]], reference: Mapping[str, Any] | None) -> str:
    """One drifted column, reference against current: decile histograms for numbers, shares for categories.
    `tests` are every test of the column in the window (their details carry the current side)."""
    title = f"<h3>{escape(column)}</h3>"
    if reference is None:
        return f"{title}<p>No single-column reference distribution (a check over several columns).</p>"
    if "edges" in reference:
        markers = [("reference mean", float(reference["mean"]))] if reference.get("mean") is not None else []
        current = next((t["details"]["current_mean"] for t in tests if (t.get("details") or {}).get("current_mean") is not None), None)
        if current is not None:
            markers.append(("current mean", float(current)))
        current_counts = next((t["details"]["current_counts"] for t in tests if (t.get("details") or {}).get("current_counts")), None)
        chart = density_chart(reference["edges"], reference["counts"], title=f"{column}: reference (filled) and current (outlined)",
                              markers=markers, current_counts=current_counts)
        return title + (chart or "<p>The reference has too few distinct values to draw.</p>")
    current: dict[str, int] = {}
    current_total = None
    for t in tests:
        details = t.get("details") or {}
        current.update(details.get("current_frequencies", {}))
        current.update(details.get("unseen", {}))
        if "current_frequencies" in details:
            current_total = t.get("n_current")
    rows = "".join(
        f'<tr><td class="name">{escape(name)}</td><td>{_share(ours)}</td><td>{_share(theirs)}</td></tr>'
        for name, ours, theirs in category_shares(reference.get("frequencies", {}), current, current_total=current_total if current else None)
    )
    return f"{title}<table><tr><th>category</th><th>reference share</th><th>current share</th></tr>{rows}</table>"


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def render_drift_report(
    summary: Mapping[str, Any], tests: Sequence[Mapping[str, Any]], references: Mapping[str, Mapping[str, Any]]
) -> str:
    """The HTML page of one checked window.

    `summary` is what `check_window` returns, `tests` its test rows, `references` each column's stored
    reference profile part (numeric: edges, counts, mean; categorical: frequencies) by column name.
    """
    model, status = str(summary["model_name"]), str(summary["status"])
    reason = summary.get("reason")
    drifted_columns: dict[str, list[Mapping[str, Any]]] = {}
    for t in tests:
        if t.get("verdict") == "drifted":
            drifted_columns.setdefault(str(t["column_name"]), []).append(t)
    sections = "".join(
        _reference_section(column, [t for t in tests if t["column_name"] == column], references.get(column)) for column in drifted_columns
    )
    drifted_lines = "".join(f"<li>{escape(line)}</li>" for line in summary.get("drifted", []))
    title = f"Drift report: {model} v{summary['model_version']}, window ending {summary['window_end']}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1>"
        f"<p>Model <b>{escape(model)}</b>, version <b>{escape(str(summary['model_version']))}</b> (champion); window "
        f"[{escape(str(summary['window_start']))}, {escape(str(summary['window_end']))}); "
        f"{_number(summary.get('rows'), '{:,}')} rows read of {_number(summary.get('rows_in_window'), '{:,}')}, "
        f"{_number(summary.get('rows_scored'), '{:,}')} scored.</p>"
        f'<p>Status: <span class="status {escape(status)}">{escape(status)}</span></p>'
        + (f'<p class="reason">No verdict: {escape(str(reason))}</p>' if reason else "")
        + (f"<h2>Drifted checks</h2><ul>{drifted_lines}</ul>" if drifted_lines else "")
        + f"<h2>Every test</h2>{_test_rows(tests)}"
        + (f"<h2>Reference distributions of the drifted columns</h2>{sections}" if sections else "")
        + "</body></html>\n"
    )
