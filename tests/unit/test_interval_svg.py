"""The interval chart's SVG: bands around their lines, gaps that break both, marked days and the strip of bars beneath."""

from __future__ import annotations

import re

from batchwatch.reporting.svg import IntervalSeries, interval_chart

DAYS = ["2026-10-01", "2026-10-02", "2026-10-03", "2026-10-04", "2026-10-05"]


def _points(attribute: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in (point.split(",") for point in attribute.split())]


def test_the_band_encloses_its_line_day_by_day() -> None:
    realized = IntervalSeries("realized", [0.84, 0.86, 0.81, 0.83, 0.85], [0.8, 0.83, 0.77, 0.8, 0.82], [0.87, 0.89, 0.85, 0.86, 0.88],
                              css="s0 realized")
    page = interval_chart(DAYS, [realized], title="AUC")
    [band] = re.findall(r'<polygon class="band s0 realized" points="([^"]+)"', page)
    [line] = re.findall(r'<polyline class="line s0 realized" points="([^"]+)"', page)
    edge, middle = _points(band), _points(line)
    upper, lower = edge[:5], edge[5:][::-1]  # the upper edge left to right, then the lower edge back
    assert [x for x, _ in upper] == [x for x, _ in lower] == [x for x, _ in middle]
    assert all(top < y < bottom for (_, top), (_, y), (_, bottom) in zip(upper, middle, lower, strict=True))  # SVG y grows downwards
    assert middle[1][1] < middle[0][1] < middle[2][1]  # 0.86 above 0.84 above 0.81
    assert "<title>2026-10-03 · realized: 0.810 [0.770, 0.850]</title>" in page


def test_a_missing_day_breaks_the_line_and_the_band() -> None:
    estimated = IntervalSeries("estimated", [0.8, 0.82, None, 0.79, None], [0.78, 0.8, None, 0.77, None], [0.82, 0.84, None, 0.81, None],
                               css="s1 estimated")
    page = interval_chart(DAYS, [estimated], title="AUC")
    assert page.count("<polyline") == 1  # the first two days; the fourth stands alone
    assert page.count('<polygon class="band s1 estimated"') == 1 and page.count('<rect class="band s1 estimated"') == 1
    assert page.count('<circle class="dot s1 estimated"') == 3
    assert re.findall(r'<text class="legend"[^>]*>([^<]+)</text>', page) == ["estimated"]
    assert interval_chart(DAYS, [IntervalSeries("nothing", [None] * 5)], title="t") == ""
    assert interval_chart([], [], title="t") == ""


def test_marked_days_and_bars_sit_on_their_days() -> None:
    rows = IntervalSeries("rows", [3000.0, 2950.0, 1200.0, 0.0, 3050.0])
    page = interval_chart(DAYS, [rows], title="rows", fmt="{:,.0f}", marks=[None, None, "low", "missing", None],
                          bars=[0.002, None, 0.5, None, 0.01], bar_classes=["", "", "late", "", ""], bars_top=0.5, bars_label="late")
    dots = [float(x) for x in re.findall(r'<circle class="dot " cx="([\d.]+)"', page)]
    marks = re.findall(r'<rect class="mark mark-(\w+)" x="([\d.]+)" y="[\d.]+" width="([\d.]+)"[^>]*><title>([^<]+)</title>', page)
    assert [(verdict, title) for verdict, _, _, title in marks] == [("low", "2026-10-03: low"), ("missing", "2026-10-04: missing")]
    assert [float(x) + float(width) / 2 for _, x, width, _ in marks] == [dots[2], dots[3]]  # each column centred on its day
    bars = re.findall(r'<rect class="bar ?(\w*)" x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"', page)
    assert len(bars) == 3 and bars[1][0] == "late"
    assert float(bars[1][4]) == 34.0 and float(bars[0][4]) == 0.5  # the share of bars_top: full strip, and a hairline for 0.4%
    assert [float(x) + float(width) / 2 for _, x, _, width, _ in bars] == [dots[0], dots[2], dots[4]]
    ticks = re.findall(r'<text x="48" y="[\d.]+" text-anchor="end">([^<]+)</text>', page)
    assert ticks == ["0", "1,525", "3,050", "50%"]  # the data's lowest, middle and highest in the given format; the strip's top


def test_labels_and_names_are_escaped() -> None:
    page = interval_chart(["<d>"], [IntervalSeries("<b>", [0.5], [0.4], [0.6])], title="<t>", marks=["<m>"])
    assert "<b>" not in page and "<d>" not in page and "<m>" not in page and "&lt;b&gt;" in page and "&lt;t&gt;" in page
