"""Small charts rendered on the server as inline SVG: no script and nothing fetched, light inside Airflow's iframe.

The drawing lives in the core (`batchwatch.reporting.svg`), shared with the drift report; here it is
marked safe for the page templates.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup

from batchwatch.reporting import svg


def line_chart(labels: Sequence[str], values: Sequence[float | None], *, title: str, fmt: str = "{:,.0f}") -> Markup:
    """One series over time; a missing value breaks the line rather than pretending to be zero."""
    return Markup(svg.line_chart(labels, values, title=title, fmt=fmt))


def density_chart(edges: Sequence[float], counts: Sequence[float], *, title: str, markers: Sequence[tuple[str, float]] = ()) -> Markup:
    """The reference histogram on its stored (decile) edges, with markers for the means."""
    return Markup(svg.density_chart(edges, counts, title=title, markers=markers))
