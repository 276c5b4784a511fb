"""The drift heatmap's SVG: equal neighbours merge into one rect, each run links to its first window."""

from __future__ import annotations

import html
import re
from datetime import datetime, timedelta, timezone

from batchwatch.reporting.svg import verdict_heatmap

START = datetime(2026, 11, 1, 1, tzinfo=timezone.utc)
WINDOWS = [START + timedelta(hours=i) for i in range(720)]


def href(column: str, test: str, window: datetime) -> str:
    return f"/drift?column={column}&test={test}&window_end={window:%Y-%m-%dT%H:%M}"


def test_a_month_of_windows_draws_one_rect_per_run() -> None:
    quiet = ["ok"] * 720
    burst = ["ok"] * 100 + ["drifted"] * 5 + ["ok"] * 400 + [None] * 15 + ["insufficient_data"] * 200
    page = verdict_heatmap(WINDOWS, [("amount", "ks", quiet), ("country", "null_rate", burst)], title="t", href=href)
    assert page.count("<rect") == 1 + 5  # a quiet check is one element; the other has five runs
    [drifted] = re.findall(r'<a href="([^"]+)" data-verdict="drifted" data-check="country:null_rate">', page)
    assert html.unescape(drifted) == href("country", "null_rate", WINDOWS[100])
    assert "5 windows ending 2026-11-05 05:00 … 09:00 UTC" in page
    assert page.count('data-verdict="ok"') == 3 and 'class="v-none"' in page  # a gap has no link
    assert re.search(r'data-windows="([^"]+)"', page).group(1).split() == [f"{w:%Y-%m-%dT%H:%M:%SZ}" for w in WINDOWS]


def test_runs_sit_where_their_windows_are() -> None:
    verdicts = ["ok"] * 360 + ["drifted"] * 360
    page = verdict_heatmap(WINDOWS, [("amount", "ks", verdicts)], title="t", href=href, label_width=200, width=920)
    xs = [(float(x), float(w)) for x, w in re.findall(r'<rect class="v-\w+" x="([\d.]+)" y="\d+" width="([\d.]+)"', page)]
    assert xs == [(200.0, 360.0), (560.0, 360.0)]  # one unit per window after the 200-unit label column


def test_labels_are_escaped_and_nothing_is_drawn_without_windows() -> None:
    page = verdict_heatmap(WINDOWS[:2], [("<b>", "ks", ["ok", "drifted"])], title="<t>", href=href)
    assert "<b>" not in page and "&lt;b&gt; · ks" in page and "&lt;t&gt;" in page
    assert verdict_heatmap([], [], title="t", href=href) == ""
