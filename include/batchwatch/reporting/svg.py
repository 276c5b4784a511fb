"""Small charts as inline SVG strings: no script and nothing fetched, so a page or a saved report shows them offline.

Every label is escaped here; the caller may embed the returned markup as is.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

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


def density_chart(edges: Sequence[float], counts: Sequence[float], *, title: str, markers: Sequence[tuple[str, float]] = ()) -> str:
    """The reference histogram on its stored (decile) edges, bar area = share of rows, with vertical
    markers (reference and current means) where the current side is stored only as moments."""
    if len(counts) == len(edges) + 1 and len(edges) >= 2:
        # Cut points with open tails (how reference_profiles stores deciles): draw each tail one neighbour wide.
        edges = [2 * edges[0] - edges[1], *edges, 2 * edges[-1] - edges[-2]]
    if len(edges) < 2 or len(counts) != len(edges) - 1:
        return ""
    low, high = float(edges[0]), float(edges[-1])
    for _, value in markers:
        low, high = min(low, value), max(high, value)
    span = (high - low) or 1.0
    total = sum(counts) or 1.0
    heights = [count / total / max(float(b) - float(a), 1e-12) for a, b, count in zip(edges[:-1], edges[1:], counts, strict=True)]
    top = _scale(heights)

    def x(value: float) -> float:
        return PAD + (WIDTH - 2 * PAD) * (value - low) / span

    parts = []
    for a, b, h, count in zip(edges[:-1], edges[1:], heights, counts, strict=True):
        bar = (HEIGHT - 2 * PAD) * h / top
        parts.append(
            f'<rect class="reference" x="{x(float(a)):.1f}" y="{HEIGHT - PAD - bar:.1f}" width="{max(x(float(b)) - x(float(a)), 0.5):.1f}" '
            f'height="{bar:.1f}"><title>[{float(a):.4g}, {float(b):.4g}): {count / total:.1%} of reference rows</title></rect>'
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
