"""Small charts rendered on the server as inline SVG: no script and nothing fetched, light inside Airflow's iframe.

The drawing lives in the core (`batchwatch.reporting.svg`), shared with the drift report; here it is
marked safe for the page templates.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from urllib.parse import urlencode

from markupsafe import Markup

from batchwatch.queries import DriftCheckDetail, DriftHeatmap, PerformanceHistory, ReleaseTest, VolumeDay
from batchwatch.reporting import svg
from batchwatch.spec.model import Volume


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


def performance_chart(history: PerformanceHistory, metric: str = "roc_auc") -> Markup:
    """Realized (solid) and estimated (dashed) `metric` with their intervals, a colour per version and role, over the
    champion's label coverage: a short bar is a day whose labels are still maturing."""
    days = history.days
    series = []
    for colour, one in enumerate(history.series):
        for source in ("realized", "estimated"):
            figures = one.figures(source, metric, days)
            if any(figure is not None and figure.value is not None for figure in figures):
                series.append(svg.IntervalSeries(
                    f"{one.role} v{one.model_version} {source}",
                    [None if figure is None else figure.value for figure in figures],
                    [None if figure is None else figure.lower for figure in figures],
                    [None if figure is None else figure.upper for figure in figures],
                    css=f"s{colour % 4} {source}",
                ))
    champion = {day.ds: day for one in reversed(history.series) if one.role == "champion" for day in one.days}
    coverage = [champion[ds].label_coverage if ds in champion else None for ds in days]
    maturity = ["matured" if ds in champion and champion[ds].matured else "maturing" for ds in days]
    return Markup(svg.interval_chart(
        [str(ds) for ds in days], series, title=f"{metric} of {history.model_name}: realized and estimated, with intervals",
        bars=coverage, bar_classes=maturity, bars_label="champion label coverage (labelled / scored)",
    ))


def volume_chart(days: Sequence[VolumeDay], settings: Volume) -> Markup:
    """Rows per day against the expected median and the band of rows the check tolerates, findings marked, late share beneath."""
    bands = [day.tolerated(settings.max_robust_z, settings.min_relative_change) for day in days]
    late = [day.late_share for day in days]
    return Markup(svg.interval_chart(
        [str(day.ds) for day in days],
        [
            svg.IntervalSeries("rows", [float(day.rows) for day in days], css="s0 realized"),
            svg.IntervalSeries("expected (same weekday median) and tolerated band", [day.expected_rows for day in days],
                               [band[0] if band else None for band in bands], [band[1] if band else None for band in bands],
                               css="expected"),
        ],
        title="rows per day against the expected median", fmt="{:,.0f}",
        marks=[day.verdict if day.finding else None for day in days],
        bars=late, bar_classes=["late" if day.verdict == "late" else "" for day in days],
        bars_label=f"late share (limit {settings.max_late_share:.1%})",
        bars_top=max([settings.max_late_share * 2, *(share for share in late if share is not None)]),
    ))


def release_interval(test: ReleaseTest) -> Markup:
    """A release test's always-valid interval of challenger - champion against its margin; nothing when the look had too little
    data to draw one."""
    if test.difference is None or test.cs_lower is None or test.cs_upper is None:
        return Markup("")
    return Markup(svg.margin_interval(test.difference, test.cs_lower, test.cs_upper, tolerated=test.tolerated, css=f"outcome-{test.outcome}",
                                      title=f"{test.metric}: challenger - champion, always-valid interval"))
