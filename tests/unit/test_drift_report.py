"""The per-window drift report renders offline, escapes what it shows, and draws each drifted column's reference."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest

from batchwatch.errors import InvalidArgument
from batchwatch.monitoring.report import parse_window_key, render_drift_report, report_relpath, window_key

END = datetime(2026, 11, 3, 0, 0, tzinfo=timezone.utc)


def summary(**overrides):
    return {
        "model_name": "fraud", "model_version": 3, "window_start": "2026-11-02T00:00:00+00:00", "window_end": "2026-11-03T00:00:00+00:00",
        "rows_in_window": 4000, "rows": 4000, "rows_scored": 3990, "status": "drifted", "reason": None,
        "drifted": ["distribution:amount: psi 0.9 (p_adj 1e-30)"], **overrides,
    }


def row(column, name, verdict, **numbers):
    return {"column_name": column, "test": name, "statistic": 0.5, "p_value": 1e-31, "p_adjusted": 1e-30, "effect_size": 0.9,
            "threshold": 0.2, "n_reference": 10000, "n_current": 4000, "verdict": verdict, "details": {}, **numbers}


REFERENCES = {
    "amount": {"edges": [1.0, 2.0, 4.0, 8.0], "counts": [10, 10, 10, 10, 10], "mean": 3.5},
    "<script>": {"frequencies": {"a": 3}},
}


def test_a_drifted_column_is_highlighted_and_drawn_as_inline_svg() -> None:
    tests = [
        row("amount", "ks", "drifted", details={"current_mean": 9.5}),
        row("amount", "psi", "ok", details={"current_counts": [0, 0, 0, 5, 35]}),  # not drifted, but it carries the current bins
        row("merchant", "chi2", "ok"),
    ]
    page = render_drift_report(summary(), tests, REFERENCES)
    assert page.count('<tr class="drifted">') == 1 and page.count('<tr class="ok">') == 2
    svg = re.search(r'<svg class="chart density".*?</svg>', page, re.S)
    assert svg and "amount: reference (filled) and current (outlined)" in svg.group() and "current mean 9.5" in svg.group()
    assert svg.group().count('<rect class="reference"') == 5 and svg.group().count('<rect class="current"') == 5
    assert "87.5% of current rows" in svg.group()  # 35 of 40 in the upper open tail


def test_a_drifted_category_shows_reference_and_current_shares() -> None:
    tests = [
        row("merchant", "chi2", "drifted", n_current=100, details={"current_frequencies": {"a": 50, "b": 20}}),
        row("merchant", "unseen_share", "drifted", details={"unseen": {"new": 30}}),
    ]
    page = render_drift_report(summary(), tests, {"merchant": {"frequencies": {"a": 50, "b": 50}}})
    shares = re.findall(r'<tr><td class="name">(\w+)</td><td>([^<]+)</td><td>([^<]+)</td></tr>', page)
    assert shares == [("b", "50.0%", "20.0%"), ("new", "0.0%", "30.0%"), ("a", "50.0%", "50.0%")]  # largest move first
    assert "1e-30" in page and "10,000" in page and "distribution:amount: psi 0.9" in page


def test_nothing_is_fetched_from_elsewhere() -> None:
    page = render_drift_report(summary(), [row("amount", "ks", "drifted")], REFERENCES)
    assert not re.search(r"""(src|href)\s*=""", page, re.I)
    assert "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "@import" not in page and "url(" not in page


def test_what_the_page_shows_is_escaped() -> None:
    tests = [row("<script>", "chi2", "drifted")]
    page = render_drift_report(summary(model_name="<b>x</b>", drifted=["<img src=x>"]), tests, REFERENCES)
    assert "<script>" not in page and "<img" not in page and "<b>x</b>" not in page
    assert "&lt;script&gt;" in page and "&lt;img src=x&gt;" in page


def test_insufficient_data_shows_its_reason() -> None:
    reason = "the window's rows span 40.0% of its 24 h, under drift.min_window_coverage (90%)"
    page = render_drift_report(summary(status="insufficient_data", reason=reason, drifted=[]), [row("amount", "ks", "insufficient_data")], REFERENCES)
    assert 'class="status insufficient_data"' in page
    assert "No verdict: the window&#x27;s rows span 40.0% of its 24 h" in page
    assert "<svg" not in page  # nothing drifted, nothing drawn


def test_window_names_round_trip_and_refuse_anything_else() -> None:
    assert window_key(END) == "20261103T0000Z"
    assert parse_window_key("20261103T0000Z") == END
    assert str(report_relpath("fraud", END)) == "reports/fraud/drift/20261103T0000Z.html"
    for bad in ("../../etc/passwd", "20261103T0000", "20261399T0000Z", "20261103T0000Z.html"):
        with pytest.raises(InvalidArgument):
            parse_window_key(bad)
