"""Small charts as inline SVG strings: no script and nothing fetched, so a page or a saved report shows them offline.

Every label is escaped here; the caller may embed the returned markup as is.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from html import escape
from typing import NamedTuple

WIDTH, HEIGHT, PAD = 640, 140, 28


def _scale(values: Sequence[float | None]) -> float:
    finite = [value for value in values if value is not None]
    top = max(finite, default=0.0)
    return top if top > 0 else 1.0


def line_chart(labels: Sequence[str], values: Sequence[float | None], *, title: str, fmt: str = "{:,.0f}") -> str:
    """One series over time; a missing value breaks the line rather than pretending to be zero."""
    top = _scale(values)
    step = (WIDTH - 2 * PAD) / max(len(values) - 1, 1)
    segments: list[list[str]] = [[]]
    dots = []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        if value is None:
            segments.append([])
            continue
        x, y = PAD + i * step, HEIGHT - PAD - (HEIGHT - 2 * PAD) * value / top
        segments[-1].append(f"{x:.1f},{y:.1f}")
        dots.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5"><title>{escape(label)}: {escape(fmt.format(value))}</title></circle>')
    lines = "".join(f'<polyline points="{" ".join(points)}"/>' for points in segments if points)
    axis = (
        f'<text x="{PAD}" y="{HEIGHT - 8}">{escape(labels[0]) if labels else ""}</text>'
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - 8}" text-anchor="end">{escape(labels[-1]) if labels else ""}</text>'
        f'<text x="2" y="{PAD - 8}">{escape(fmt.format(top))}</text>'
        f'<line class="axis" x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}"/>'
    )
    return (
        f'<svg class="chart line" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>{axis}{lines}{''.join(dots)}</svg>"
    )


class IntervalSeries(NamedTuple):
    """One line of an interval chart, with a shaded band where `lower` and `upper` are given; `css` names its classes."""

    name: str
    values: Sequence[float | None]
    lower: Sequence[float | None] = ()
    upper: Sequence[float | None] = ()
    css: str = ""


def _runs_of_present(present: Sequence[bool]) -> list[range]:
    """Maximal runs of consecutive indices where `present` holds: a gap breaks a line or a band."""
    runs: list[range] = []
    start = None
    for i, here in enumerate([*present, False]):
        if here and start is None:
            start = i
        elif not here and start is not None:
            runs.append(range(start, i))
            start = None
    return runs


def interval_chart(
    labels: Sequence[str],
    series: Sequence[IntervalSeries],
    *,
    title: str,
    fmt: str = "{:.3f}",
    marks: Sequence[str | None] = (),
    bars: Sequence[float | None] = (),
    bar_classes: Sequence[str] = (),
    bars_label: str = "",
    bars_top: float = 1.0,
    width: int = 900,
) -> str:
    """Lines over shared days, each with its confidence (or tolerance) band, a legend, and optionally `marks`
    (a word per day, e.g. a verdict: the day's column is tinted and named) and a strip of `bars` beneath
    (shares of `bars_top`, e.g. label coverage) on the same x positions.

    The y axis spans the figures and their bands, not zero to the top: intervals of an AUC near 0.85
    would be flat lines on a 0..1 axis. A missing value breaks its line and band.
    """
    if not labels:
        return ""
    left, right, top, plot_height, strip_height = 52, 16, 26, 150, 34
    plot_bottom = top + plot_height
    strip_top = plot_bottom + 12
    bottom = strip_top + strip_height if bars else plot_bottom
    height = bottom + 20
    plot_width = width - left - right
    step = plot_width / max(len(labels) - 1, 1)

    def x(i: int) -> float:
        return left + plot_width / 2 if len(labels) == 1 else left + i * step

    finite = [value for one in series for values in (one.values, one.lower, one.upper) for value in values if value is not None]
    if not finite:
        return ""
    low, high = min(finite), max(finite)
    margin = (high - low) * 0.08 or abs(high) * 0.05 or 0.05
    low, high = low - margin, high + margin

    def y(value: float) -> float:
        return plot_bottom - plot_height * (value - low) / (high - low)

    parts = []
    for tick in (low + margin, (low + high) / 2, high - margin):
        parts.append(f'<line class="grid" x1="{left}" y1="{y(tick):.1f}" x2="{width - right}" y2="{y(tick):.1f}"/>'
                     f'<text x="{left - 4}" y="{y(tick) + 4:.1f}" text-anchor="end">{escape(fmt.format(tick))}</text>')
    column = min(step, plot_width / 2)
    last_named = -1e9
    for i, mark in enumerate(marks):
        if mark is None:
            continue
        css = escape(f"mark mark-{mark}")
        parts.append(f'<rect class="{css}" x="{x(i) - column / 2:.1f}" y="{top}" width="{column:.1f}" height="{plot_height}">'
                     f"<title>{escape(labels[i])}: {escape(mark)}</title></rect>")
        if x(i) - last_named >= 44:
            parts.append(f'<text class="{css}" x="{x(i):.1f}" y="{top + 10}" text-anchor="middle">{escape(mark)}</text>')
            last_named = x(i)
    for one in series:
        css = escape(one.css)
        if one.lower and one.upper:
            present = [lo is not None and hi is not None for lo, hi in zip(one.lower, one.upper, strict=True)]
            for run in _runs_of_present(present):
                if len(run) == 1:
                    i = run[0]
                    parts.append(f'<rect class="band {css}" x="{x(i) - 2:.1f}" y="{y(one.upper[i]):.1f}" width="4" '
                                 f'height="{max(y(one.lower[i]) - y(one.upper[i]), 0.5):.1f}"/>')
                    continue
                edge = [f"{x(i):.1f},{y(one.upper[i]):.1f}" for i in run] + [f"{x(i):.1f},{y(one.lower[i]):.1f}" for i in reversed(run)]
                parts.append(f'<polygon class="band {css}" points="{" ".join(edge)}"/>')
        for run in _runs_of_present([value is not None for value in one.values]):
            if len(run) > 1:
                parts.append(f'<polyline class="line {css}" points="{" ".join(f"{x(i):.1f},{y(one.values[i]):.1f}" for i in run)}"/>')
        for i, value in enumerate(one.values):
            if value is None:
                continue
            interval = ""
            if one.lower and one.upper and one.lower[i] is not None and one.upper[i] is not None:
                interval = f" [{fmt.format(one.lower[i])}, {fmt.format(one.upper[i])}]"
            parts.append(f'<circle class="dot {css}" cx="{x(i):.1f}" cy="{y(value):.1f}" r="2.5">'
                         f"<title>{escape(labels[i])} · {escape(one.name)}: {escape(fmt.format(value) + interval)}</title></circle>")
    if bars:
        parts.append(f'<line class="axis" x1="{left}" y1="{bottom}" x2="{width - right}" y2="{bottom}"/>'
                     f'<text x="{left - 4}" y="{strip_top + 8}" text-anchor="end">{escape(f"{bars_top:.0%}")}</text>'
                     f'<text class="strip-label" x="{width - right}" y="{strip_top - 2}" text-anchor="end">{escape(bars_label)}</text>')
        bar_width = max(min(step * 0.7, 18), 1.5)
        for i, share in enumerate(bars):
            if share is None:
                continue
            bar = strip_height * min(max(share / bars_top, 0.0), 1.0)
            css = escape(f"bar {bar_classes[i] if i < len(bar_classes) else ''}".strip())
            parts.append(f'<rect class="{css}" x="{x(i) - bar_width / 2:.1f}" y="{bottom - bar:.1f}" width="{bar_width:.1f}" '
                         f'height="{max(bar, 0.5):.1f}"><title>{escape(labels[i])}: {share:.1%} {escape(bars_label)}</title></rect>')
    ticks = sorted({0, len(labels) // 2, len(labels) - 1})
    for n, i in enumerate(ticks):
        anchor = "start" if n == 0 and len(ticks) > 1 else "end" if n == len(ticks) - 1 and len(ticks) > 1 else "middle"
        parts.append(f'<text x="{x(i):.1f}" y="{height - 4}" text-anchor="{anchor}">{escape(labels[i])}</text>')
    legend, at = [], left
    for one in series:
        css = escape(one.css)
        legend.append(f'<line class="line {css}" x1="{at}" y1="10" x2="{at + 22}" y2="10"/>'
                      f'<text class="legend" x="{at + 26}" y="14">{escape(one.name)}</text>')
        at += 40 + 6.5 * len(one.name)
    return (
        f'<svg class="chart interval" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>{''.join(legend)}{''.join(parts)}</svg>"
    )


def density_chart(
    edges: Sequence[float],
    counts: Sequence[float],
    *,
    title: str,
    markers: Sequence[tuple[str, float]] = (),
    current_counts: Sequence[float] | None = None,
) -> str:
    """The reference histogram on its stored (decile) edges, bar area = share of rows; with `current_counts`
    (the window's values on the same bins) the current histogram as outlined bars over it, and vertical
    markers (e.g. the two means)."""
    if len(counts) == len(edges) + 1 and len(edges) >= 2:
        # Cut points with open tails (how reference_profiles stores deciles): draw each tail one neighbour wide.
        edges = [2 * edges[0] - edges[1], *edges, 2 * edges[-1] - edges[-2]]
    if len(edges) < 2 or len(counts) != len(edges) - 1:
        return ""
    if current_counts is not None and (len(current_counts) != len(counts) or not sum(current_counts)):
        current_counts = None
    low, high = float(edges[0]), float(edges[-1])
    for _, value in markers:
        low, high = min(low, value), max(high, value)
    span = (high - low) or 1.0

    def densities(values: Sequence[float]) -> list[float]:
        total = sum(values) or 1.0
        return [count / total / max(float(b) - float(a), 1e-12) for a, b, count in zip(edges[:-1], edges[1:], values, strict=True)]

    def x(value: float) -> float:
        return PAD + (WIDTH - 2 * PAD) * (value - low) / span

    series = [("reference", counts, densities(counts))]
    if current_counts is not None:
        series.append(("current", current_counts, densities(current_counts)))
    top = _scale([h for _, _, heights in series for h in heights])
    parts = []
    for name, values, heights in series:
        total = sum(values) or 1.0
        for a, b, h, count in zip(edges[:-1], edges[1:], heights, values, strict=True):
            bar = (HEIGHT - 2 * PAD) * h / top
            parts.append(
                f'<rect class="{name}" x="{x(float(a)):.1f}" y="{HEIGHT - PAD - bar:.1f}" width="{max(x(float(b)) - x(float(a)), 0.5):.1f}" '
                f'height="{bar:.1f}"><title>[{float(a):.4g}, {float(b):.4g}): {count / total:.1%} of {name} rows</title></rect>'
            )
    for i, (label, value) in enumerate(markers):
        parts.append(
            f'<line class="marker m{i}" x1="{x(value):.1f}" y1="{PAD - 6}" x2="{x(value):.1f}" y2="{HEIGHT - PAD}"/>'
            f'<text class="m{i}" x="{x(value) + 3:.1f}" y="{PAD - 8 + 11 * i}">{escape(label)} {value:.4g}</text>'
        )
    axis = (
        f'<text x="{PAD}" y="{HEIGHT - 8}">{low:.4g}</text><text x="{WIDTH - PAD}" y="{HEIGHT - 8}" text-anchor="end">{high:.4g}</text>'
        f'<line class="axis" x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}"/>'
    )
    return (
        f'<svg class="chart density" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>{axis}{''.join(parts)}</svg>"
    )


def category_shares(
    reference: Mapping[str, int], current: Mapping[str, int], *, current_total: int | None = None, limit: int = 15
) -> list[tuple[str, float | None, float | None]]:
    """(category, reference share, current share) for the categories that moved most, largest change first.

    A category one side never saw has share 0 there; with no current counts stored the current share is
    None. `current_total` is the window's non-null count when `current` holds only some categories.
    """
    reference_total, current_total = sum(reference.values()), current_total or sum(current.values())
    rows = []
    for name in set(reference) | set(current):
        ours = reference.get(name, 0) / reference_total if reference_total else None
        theirs = current.get(name, 0) / current_total if current_total else None
        rows.append((name, ours, theirs))
    rows.sort(key=lambda row: (-abs((row[2] or 0.0) - (row[1] or 0.0)) if row[2] is not None else -(row[1] or 0.0), row[0]))
    return rows[:limit]

def margin_interval(
    difference: float,
    lower: float,
    upper: float,
    *,
    tolerated: tuple[float | None, float | None],
    title: str,
    css: str = "",
    fmt: str = "{:+.4f}",
    width: int = 300,
) -> str:
    """A difference and its interval on one axis with zero and the margin: the side beyond the margin, where the challenger
    is worse than allowed, is shaded, so whether the interval clears it reads at a glance. `tolerated` is (low, high) of the
    differences allowed, None for an open side. Each test gets its own axis: metrics differ in units."""
    bounds = [bound for bound in tolerated if bound is not None]
    # A little of the harm side is always in view, so where the margin lies reads even when the interval is far from it.
    points = [difference, lower, upper, 0.0, *(bound * 1.3 for bound in bounds)]
    low, high = min(points), max(points)
    pad = (high - low) * 0.08 or 0.01
    low, high = low - pad, high + pad
    left, right, top, height, axis = 6, 6, 11, 40, 23

    def x(value: float) -> float:
        return left + (width - left - right) * (value - low) / (high - low)

    parts = []
    band = f'y="{top}" height="{axis + 5 - top}"'
    if tolerated[0] is not None:
        parts.append(f'<rect class="harm" x="{left}" {band} width="{x(tolerated[0]) - left:.1f}"/>')
    if tolerated[1] is not None:
        parts.append(f'<rect class="harm" x="{x(tolerated[1]):.1f}" {band} width="{width - right - x(tolerated[1]):.1f}"/>')
    parts.append(f'<line class="axis" x1="{left}" y1="{axis}" x2="{width - right}" y2="{axis}"/>')
    parts.append(f'<line class="zero" x1="{x(0.0):.1f}" y1="{top}" x2="{x(0.0):.1f}" y2="{axis + 5}"/>'
                 f'<text class="zero" x="{x(0.0):.1f}" y="{height - 2}" text-anchor="middle">0</text>')
    for bound in bounds:
        # Labelled on the tolerated side of its line, inside the chart.
        anchor, shift = ("start", 3) if bound < 0 else ("end", -3)
        parts.append(f'<line class="margin" x1="{x(bound):.1f}" y1="{top}" x2="{x(bound):.1f}" y2="{axis + 5}"/>'
                     f'<text class="margin" x="{x(bound) + shift:.1f}" y="9" text-anchor="{anchor}">margin {bound:+g}</text>')
    interval = f"{fmt.format(difference)} [{fmt.format(lower)}, {fmt.format(upper)}]"
    parts.append(f'<line class="interval {escape(css)}" x1="{x(lower):.1f}" y1="{axis}" x2="{max(x(upper), x(lower) + 1):.1f}" y2="{axis}">'
                 f"<title>{escape(title)}: {escape(interval)}</title></line>"
                 f'<circle class="estimate {escape(css)}" cx="{x(difference):.1f}" cy="{axis}" r="3"/>')
    return (
        f'<svg class="chart margin" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}: {escape(interval)}"><title>{escape(title)}: {escape(interval)}</title>{"".join(parts)}</svg>'
    )


def _runs(values: Sequence[str | None]) -> list[tuple[int, int, str | None]]:
    """Maximal runs of equal values as (first index, length, value)."""
    runs: list[tuple[int, int, str | None]] = []
    for i, value in enumerate(values):
        if runs and runs[-1][2] == value:
            first, length, _ = runs[-1]
            runs[-1] = (first, length + 1, value)
        else:
            runs.append((i, 1, value))
    return runs


def verdict_heatmap(
    windows: Sequence[datetime],
    rows: Sequence[tuple[str, str, Sequence[str | None]]],
    *,
    title: str,
    href: Callable[[str, str, datetime], str],
    label_width: int = 230,
    width: int = 1200,
    row_height: int = 16,
) -> str:
    """Checks (rows) x windows (columns), coloured by verdict; `rows` holds (column, test, verdicts).

    A month of hourly windows is ~700 columns by dozens of checks: drawn cell by cell that is tens of
    thousands of elements. Equal neighbours are merged into one rect, so a quiet check is one element
    and the page stays light. Each run links to its first window (`href(column, test, window)`); a page
    script may refine a click to the window under the pointer from `data-windows` and `data-label-width`.
    """
    if not windows:
        return ""
    cell = (width - label_width) / len(windows)
    top = 18
    parts = []
    # A tick at each midnight that ends a window, labelled with that date, as the page's window ends read.
    days = sorted({window.replace(hour=0, minute=0, second=0, microsecond=0) for window in windows})
    label_every = max(1, len(days) // 10)
    for n, day in enumerate(days):
        x = label_width + bisect.bisect_left(windows, day) * cell
        parts.append(f'<line class="day" x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{top + row_height * len(rows)}"/>')
        if n % label_every == 0:
            parts.append(f'<text x="{x + 2:.1f}" y="{top - 6}">{day:%m-%d}</text>')
    for r, (column, test, verdicts) in enumerate(rows):
        y = top + r * row_height
        name = f"{column} · {test}"
        parts.append(
            f'<g class="check" data-check="{escape(column)}:{escape(test)}">'
            f'<text class="label" x="{label_width - 6}" y="{y + row_height - 4}" text-anchor="end">{escape(name)}</text>'
        )
        for first, length, verdict in _runs(verdicts):
            start, end = windows[first], windows[first + length - 1]
            span = f"window ending {start:%Y-%m-%d %H:%M}" if length == 1 else f"{length} windows ending {start:%Y-%m-%d %H:%M} … {end:%H:%M}"
            if length > 1 and start.date() != end.date():
                span = f"{length} windows ending {start:%Y-%m-%d %H:%M} … {end:%Y-%m-%d %H:%M}"
            rect = (
                f'<rect class="v-{escape(verdict or "none")}" x="{label_width + first * cell:.2f}" y="{y + 1}" width="{length * cell:.2f}" '
                f'height="{row_height - 2}"><title>{escape(name)}: {escape(verdict or "not run")}, {span} UTC</title></rect>'
            )
            if verdict is None:
                parts.append(rect)
            else:
                link = escape(href(column, test, start))
                parts.append(f'<a href="{link}" data-verdict="{escape(verdict)}" data-check="{escape(column)}:{escape(test)}">{rect}</a>')
        parts.append("</g>")
    height = top + row_height * len(rows) + 4
    return (
        f'<svg class="heatmap" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
        f'data-label-width="{label_width}" data-windows="{" ".join(f"{window:%Y-%m-%dT%H:%M:%SZ}" for window in windows)}">'
        f'<title>{escape(title)}</title>{"".join(parts)}</svg>'
    )

