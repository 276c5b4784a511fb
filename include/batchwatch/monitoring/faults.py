"""The chaos drill's faults by name, what each injects, and the moments the daily jobs run at.

Free of heavy imports: the DAG factory lists the faults in the drill's trigger form at parse time.
monitoring.drill plans and injects them.
"""

from __future__ import annotations

import math
from datetime import date, datetime, time, timedelta, timezone

from batchwatch.spec import ModelSpec

FAULTS: dict[str, str] = {
    "shifted_feature": "a numeric feature moved by one reference standard deviation from noon of the last day on",
    "null_burst": "a feature left empty for three hours from noon of the last day",
    "corrupted_scores": "the champion's stored scores of the last day replaced by uniform noise",
    "flipped_labels": "a fifth of the labels of the newest day whose labels have matured flipped",
    "missing_day": "the last day's source rows never arrive, so the nightly run scores nothing",
}


def time_of_day(cron: str) -> time:
    """The time a daily cron 'M H * * *' (UTC) fires at; the spec validates that shape."""
    minute, hour = (int(field) for field in cron.split()[:2])
    return time(hour, minute)


def run_after(cron: str, ds: date) -> datetime:
    """When a daily job on `cron` runs for day `ds`: that time of day, once the day is over."""
    return datetime.combine(ds + timedelta(days=1), time_of_day(cron), tzinfo=timezone.utc)


def minimum_days(spec: ModelSpec) -> int:
    """The fewest days a drill window needs for flipped_labels: its first day's labels mature by the last day's deadline.

    Day `last - k` has matured once `label.delay_days` have passed after it ends, so by the last deadline when
    k >= delay_days minus the deadline's time of day (in days).
    """
    deadline = time_of_day(spec.schedules.daily_performance)
    return max(0, math.ceil(spec.label.delay_days - (deadline.hour * 60 + deadline.minute) / 1440)) + 1
