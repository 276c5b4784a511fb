"""Small charts rendered on the server as inline SVG: no script and nothing fetched, light inside Airflow's iframe.

The drawing lives in the core (`batchwatch.reporting.svg`), shared with the drift report; here it is
marked safe for the page templates.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from urllib.parse import urlencode

from markupsafe import Markup

from batchwatch.queries import DriftCheckDetail, DriftHeatmap
from batchwatch.reporting import svg


def line_chart(labels: Sequence[str], values: Sequence[float | None], *, title: str, fmt: str = "{:,.0f}") -> Markup:
    """One series over time; a missing value breaks the line rather than pretending to be zero."""
    return Markup(svg.line_chart(labels, values, title=title, fmt=fmt))


def density_chart(edges: Sequence[float], counts: Sequence[float], *, title: str, markers: Sequence[tuple[str, float]] = ()) -> Markup:
    """The reference histogram on its stored (decile) edges, with markers for the means."""
    return Markup(svg.density_chart(edges, counts, title=title, markers=markers))



def drift_heatmap(heatmap: DriftHeatmap, drill_url: str) -> Markup:
    """The drift panel's check x window map; each run of equal verdicts links to `drill_url` for its first window."""

    def href(column: str, test: str, window: datetime) -> str:
        return f"{drill_url}?{urlencode({'window_end': window.isoformat(), 'column': column, 'test': test})}"

    rows = [(check.column, check.test, check.verdicts) for check in heatmap.checks]
    return Markup(svg.verdict_heatmap(heatmap.windows, rows, title=f"drift verdicts of {heatmap.model_name}, check × window", href=href))


def current_against_reference(check: DriftCheckDetail) -> Markup:
    """A numeric column's reference histogram with the window's own on the same bins (stored with the PSI test)."""
    reference = check.reference or {}
    if not (reference.get("edges") and reference.get("counts")):
        return Markup("")
    moments = check.details_of("ks")
    markers = [("reference mean", moments["reference_mean"]), ("current mean", moments["current_mean"])] \
        if moments.get("reference_mean") is not None and moments.get("current_mean") is not None else []
    return Markup(svg.density_chart(
        reference["edges"], reference["counts"], title=f"{check.column}: reference (filled) and current (outlined)", markers=markers,
        current_counts=check.details_of("psi").get("current_counts"),
    ))


def category_shares(check: DriftCheckDetail) -> list[tuple[str, float | None, float | None]]:
    """A categorical column's reference and current shares, the categories that moved most first."""
    frequencies = (check.reference or {}).get("frequencies")
    if not frequencies:
        return []
    current = {**check.details_of("chi2").get("current_frequencies", {}), **check.details_of("unseen_share").get("unseen", {})}
    return svg.category_shares(frequencies, current, current_total=check.n_current_of("chi2") if current else None)
