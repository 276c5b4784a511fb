"""Deterministic card-transaction simulator with delayed fraud labels.

The pipeline needs realistic but *reproducible* data: every UTC day is drawn
from its own generator ``np.random.default_rng([seed, day_ordinal])`` so any
date range can be re-simulated piecewise and still give identical rows.  Drift
scenarios and malformed rows are injected on top so that the monitoring and
validation stages have something known to detect.

Internally categoricals are carried as small integer codes (``-1`` = null,
``len(values)`` = the scenario value ``new_<feature>``, ``len(values) + 1`` =
the malformed value ``zz_unknown``) and only turned into strings once, at the
end, which keeps a million rows well under a second of work.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd

__all__ = [
    "CHANNELS",
    "COUNTRIES",
    "MALFORMED_KINDS",
    "MERCHANT_CATEGORIES",
    "OUTCOME_COLUMNS",
    "SCENARIO_KINDS",
    "TRANSACTION_COLUMNS",
    "Scenario",
    "SimulatedBatch",
    "fraud_probability",
    "simulate",
]

TRANSACTION_COLUMNS = [
    "transaction_id",
    "card_id",
    "event_time",
    "amount",
    "hour",
    "day_of_week",
    "txn_count_30d",
    "avg_amount_7d",
    "merchant_category",
    "country",
    "channel",
]
OUTCOME_COLUMNS = ["entity_id", "label", "observed_at"]

MERCHANT_CATEGORIES: tuple[str, ...] = (
    "grocery",
    "restaurants",
    "fuel",
    "electronics",
    "travel",
    "online_retail",
    "entertainment",
    "health",
)
COUNTRIES: tuple[str, ...] = ("US", "GB", "DE", "FR", "CA", "ES", "IT", "NL")
CHANNELS: tuple[str, ...] = ("pos", "online", "atm")

MALFORMED_KINDS = (
    "nan",
    "pos_inf",
    "neg_inf",
    "negative_amount",
    "hour_out_of_range",
    "unknown_category",
    "wrong_type",
)
SCENARIO_KINDS = ("mean_shift", "variance_change", "new_category", "null_burst", "concept_drift")
CONCEPTS = ("baseline", "drifted")

UNKNOWN_CATEGORY = "zz_unknown"
ID_STRIDE = 10_000_000  # transaction_id = day_ordinal * ID_STRIDE + row index

# --- generative parameters -------------------------------------------------
_CATEGORY_P = np.array([0.25, 0.18, 0.12, 0.07, 0.07, 0.15, 0.08, 0.08])
# log-amount offsets per category: travel/electronics tickets are larger.
_CATEGORY_LOG_OFFSET = np.array([0.0, -0.2, 0.05, 1.1, 1.3, 0.3, -0.1, 0.2])
_COUNTRY_P = np.array([0.62, 0.09, 0.07, 0.06, 0.06, 0.04, 0.03, 0.03])
# channel mix (pos, online, atm) conditional on merchant category.
_CHANNEL_P = np.array(
    [
        [0.80, 0.12, 0.08],  # grocery
        [0.82, 0.15, 0.03],  # restaurants
        [0.90, 0.02, 0.08],  # fuel
        [0.45, 0.52, 0.03],  # electronics
        [0.30, 0.68, 0.02],  # travel
        [0.06, 0.93, 0.01],  # online_retail
        [0.55, 0.40, 0.05],  # entertainment
        [0.75, 0.15, 0.10],  # health
    ]
)
# Relative transaction intensity per UTC hour: quiet nights, evening peak.
_DIURNAL = np.array(
    [0.6, 0.4, 0.3, 0.25, 0.25, 0.35, 0.7, 1.3, 2.0, 2.6, 3.0, 3.3,
     3.8, 3.6, 3.3, 3.3, 3.5, 4.0, 4.4, 4.2, 3.6, 2.8, 1.9, 1.1]
)
_DIURNAL_P = _DIURNAL / _DIURNAL.sum()
_DIURNAL_CUM = np.concatenate([[0.0], np.cumsum(_DIURNAL_P)])

_LOG_AMOUNT_BASE = float(np.log(38.0))
_AMOUNT_LOG_SD = 0.8
_AVG_LOG_OFFSET = 0.25  # avg_amount_7d mixes categories, so sits a bit above the base
_AVG_LOG_SD = 0.2
_CARD_LOG_SD = 0.35
_TYPICAL_AVG = float(np.exp(_LOG_AMOUNT_BASE + _AVG_LOG_OFFSET))
_NEW_CARD_SHARE = 0.04
_COUNTRY_NULL_SHARE = 0.01
_TXN_NB_N = 4.0
_TXN_MEAN = 12.0
_TXN_NB_P = _TXN_NB_N / (_TXN_NB_N + _TXN_MEAN)

_HOURS = np.arange(24, dtype=np.float64) + 0.5
_HOUR_MEAN = float((_DIURNAL_P * _HOURS).sum())
_HOUR_SD = float(np.sqrt((_DIURNAL_P * (_HOURS - _HOUR_MEAN) ** 2).sum()))

# Baseline (centre, spread, lower, upper) of the integer-valued numeric features,
# used by mean_shift / variance_change.  Fixed constants, not batch statistics, so a
# scenario's effect never depends on how the date range was split into calls.
_ADDITIVE = {
    "txn_count_30d": (_TXN_MEAN, float(np.sqrt(_TXN_MEAN + _TXN_MEAN**2 / _TXN_NB_N)), 0.0, np.inf),
    "hour": (_HOUR_MEAN, _HOUR_SD, 0.0, 23.0),
    "day_of_week": (3.0, 2.0, 0.0, 6.0),
}
# Positive, lognormal features: (log-centre) used by variance_change in log space.
_MULTIPLICATIVE = {
    "amount": _LOG_AMOUNT_BASE + float(_CATEGORY_P @ _CATEGORY_LOG_OFFSET),
    "avg_amount_7d": _LOG_AMOUNT_BASE + _AVG_LOG_OFFSET,
}
_NUMERIC_FEATURES = ("amount", "hour", "day_of_week", "txn_count_30d", "avg_amount_7d")
_CATEGORICAL_FEATURES = {
    "merchant_category": MERCHANT_CATEGORIES,
    "country": COUNTRIES,
    "channel": CHANNELS,
}
_NULLABLE_FEATURES = _NUMERIC_FEATURES + tuple(_CATEGORICAL_FEATURES)

# --- label rules -----------------------------------------------------------
_RISKY_CATEGORIES = ("electronics", "online_retail")
_DRIFT_CATEGORIES = ("grocery", "fuel")
_BASELINE_INTERCEPT = -5.7
_DRIFTED_INTERCEPT = -6.85


@dataclass(frozen=True)
class Scenario:
    """A drift injected from ``start`` onwards (rows with ``event_time >= start``).

    ``magnitude`` per kind:

    * ``mean_shift`` - ``amount`` / ``avg_amount_7d`` are multiplied by
      ``exp(0.5 * magnitude)`` (a shift of the log-mean by ``0.5 * magnitude``,
      about 0.6 log-sd, and amounts stay > 0).  ``txn_count_30d``, ``hour`` and
      ``day_of_week`` get ``magnitude * baseline_std`` added, rounded to an
      integer and clipped to the valid range (counts >= 0, hour 0..23, dow 0..6).
    * ``variance_change`` - deviations from the baseline centre are scaled by
      ``1 + magnitude`` (must be > -1).  Positive features are scaled in log
      space so they stay > 0; integer features are rounded and clipped.
    * ``new_category`` - a share ``magnitude`` (0..1) of the rows get the new
      value ``"new_<feature>"``.  This is drift, not a malformation (for
      ``merchant_category`` the value is also unknown to the spec, by design).
    * ``null_burst`` - a share ``magnitude`` (0..1) of the feature becomes null.
    * ``concept_drift`` - labels follow ``fraud_probability(concept="drifted")``;
      ``feature`` and ``magnitude`` are ignored.

    Randomness comes from a generator seeded by (seed, day, kind, feature), never
    from the day generator, so unaffected rows and days are bit-identical.
    """

    kind: str
    start: datetime
    feature: str | None = None
    magnitude: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in SCENARIO_KINDS:
            raise ValueError(f"unknown scenario kind {self.kind!r}; expected one of {SCENARIO_KINDS}")
        if not isinstance(self.start, datetime) or self.start.utcoffset() is None:
            raise ValueError(f"scenario start must be a tz-aware datetime, got {self.start!r}")
        if self.kind == "concept_drift":
            return
        allowed: tuple[str, ...]
        if self.kind in ("mean_shift", "variance_change"):
            allowed = _NUMERIC_FEATURES
        elif self.kind == "new_category":
            allowed = tuple(_CATEGORICAL_FEATURES)
        else:
            allowed = _NULLABLE_FEATURES
        if self.feature not in allowed:
            raise ValueError(
                f"{self.kind} scenario cannot target feature {self.feature!r}; expected one of {allowed}"
            )
        if not np.isfinite(self.magnitude):
            raise ValueError(f"scenario magnitude must be finite, got {self.magnitude!r}")
        if self.kind in ("new_category", "null_burst") and not 0.0 <= self.magnitude <= 1.0:
            raise ValueError(f"{self.kind} magnitude is a share in [0, 1], got {self.magnitude!r}")
        if self.kind == "variance_change" and self.magnitude <= -1.0:
            raise ValueError(f"variance_change magnitude must be > -1, got {self.magnitude!r}")


@dataclass(frozen=True)
class SimulatedBatch:
    """Transactions, their (delayed) outcomes and which rows were corrupted on purpose."""

    transactions: pd.DataFrame
    outcomes: pd.DataFrame
    malformed: pd.Series


# --- label rule ------------------------------------------------------------
def _logistic(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _log_ratio(amount: np.ndarray, avg: np.ndarray) -> np.ndarray:
    """log(amount / avg_amount_7d), with a null/invalid avg treated as typical."""
    avg_ok = np.isfinite(avg) & (avg > 0)
    amt_ok = np.isfinite(amount) & (amount > 0)
    safe_avg = np.where(avg_ok, avg, _TYPICAL_AVG)
    safe_amt = np.where(amt_ok, amount, safe_avg)
    return np.log(safe_amt / safe_avg)


def _score(
    *,
    amount: np.ndarray,
    avg: np.ndarray,
    hour: np.ndarray,
    txn_count: np.ndarray,
    online: np.ndarray,
    pos: np.ndarray,
    atm: np.ndarray,
    cross_border: np.ndarray,
    risky_category: np.ndarray,
    drift_category: np.ndarray,
    concept: str,
) -> np.ndarray:
    """The single implementation of both label rules (shared by simulate and fraud_probability)."""
    ratio = _log_ratio(amount, avg)
    with np.errstate(invalid="ignore"):
        night = (hour >= 0) & (hour <= 5)
        day = (hour >= 9) & (hour <= 17)
    count = np.where(np.isfinite(txn_count), txn_count, _TXN_MEAN)
    if concept == "baseline":
        z = (
            _BASELINE_INTERCEPT
            + 1.6 * np.clip(ratio, -1.0, 4.0)
            + 1.4 * night
            + 1.0 * online
            + 0.5 * atm
            + 0.06 * np.clip(count - _TXN_MEAN, -_TXN_MEAN, 40.0)
            + 0.7 * cross_border
            + 0.6 * risky_category
        )
    else:
        # Fraud moves to small daytime card-present purchases at grocery/fuel;
        # the large-amount signal is gone (small amounts are now the risky ones).
        z = (
            _DRIFTED_INTERCEPT
            + 1.8 * drift_category
            + 1.2 * pos
            + 1.2 * day
            - 0.9 * np.clip(ratio, -2.0, 2.0)
            + 0.8 * (count <= 4)
        )
    return _logistic(z)


def fraud_probability(frame: pd.DataFrame, *, concept: str = "baseline") -> np.ndarray:
    """Known P(fraud | features), the ground truth the labels are drawn from.

    ``baseline``: rises with amount relative to ``avg_amount_7d`` (null avg =
    typical), night hours 0-5, online (and ATM) channel, high ``txn_count_30d``,
    non-US countries and electronics/online_retail; base rate about 3%.
    ``drifted``: small daytime POS purchases at grocery/fuel; similar base rate.
    Nulls and unknown values simply contribute nothing.
    """
    if concept not in CONCEPTS:
        raise ValueError(f"unknown concept {concept!r}; expected one of {CONCEPTS}")

    def num(col: str) -> np.ndarray:
        return pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)

    def flag(col: str, values: Sequence[str]) -> np.ndarray:
        return frame[col].isin(list(values)).to_numpy(dtype=bool)

    channel = frame["channel"]
    return _score(
        amount=num("amount"),
        avg=num("avg_amount_7d"),
        hour=num("hour"),
        txn_count=num("txn_count_30d"),
        online=(channel == "online").fillna(False).to_numpy(dtype=bool),
        pos=(channel == "pos").fillna(False).to_numpy(dtype=bool),
        atm=(channel == "atm").fillna(False).to_numpy(dtype=bool),
        cross_border=flag("country", COUNTRIES[1:]),
        risky_category=flag("merchant_category", _RISKY_CATEGORIES),
        drift_category=flag("merchant_category", _DRIFT_CATEGORIES),
        concept=concept,
    )


# --- simulation ------------------------------------------------------------
def _to_utc(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValueError(f"{name} must be a tz-aware datetime, got {value!r}")
    if value.utcoffset() != timedelta(0):
        raise ValueError(f"{name} must be in UTC, got offset {value.utcoffset()}")
    return value.astimezone(timezone.utc)


def _epoch_us(value: datetime) -> int:
    """Microseconds since the epoch, exact (no float rounding)."""
    delta = value.astimezone(timezone.utc) - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _sample_codes(u: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Inverse-CDF draw of category codes from uniforms (faster than rng.choice)."""
    cum = np.cumsum(probs)
    cum[-1] = 1.0
    return np.searchsorted(cum, u, side="right").astype(np.int64)


def _category_codes(names: Sequence[str]) -> list[int]:
    return [MERCHANT_CATEGORIES.index(name) for name in names]


def _scenario_rng(seed: int, ordinal: int, scenario: Scenario) -> np.random.Generator:
    feature_key = zlib.crc32((scenario.feature or "").encode())
    return np.random.default_rng([seed, ordinal, 0x5CE7A, SCENARIO_KINDS.index(scenario.kind), feature_key])


def _apply_scenario(
    cols: dict[str, np.ndarray], mask: np.ndarray, scenario: Scenario, rng: np.random.Generator
) -> None:
    """Mutate the day's column arrays in place for rows in ``mask``."""
    kind, feature, m = scenario.kind, scenario.feature, float(scenario.magnitude)
    assert feature is not None
    values = cols[feature]
    if kind == "mean_shift":
        if feature in _MULTIPLICATIVE:
            values[mask] *= np.exp(0.5 * m)
        else:
            _, sd, lo, hi = _ADDITIVE[feature]
            values[mask] = np.clip(values[mask] + np.round(m * sd), lo, hi)
    elif kind == "variance_change":
        if feature in _MULTIPLICATIVE:
            centre = _MULTIPLICATIVE[feature]
            values[mask] = np.exp(centre + (np.log(values[mask]) - centre) * (1.0 + m))
        else:
            centre, _, lo, hi = _ADDITIVE[feature]
            values[mask] = np.clip(np.round(centre + (values[mask] - centre) * (1.0 + m)), lo, hi)
    elif kind == "new_category":
        hit = mask & (rng.random(values.shape[0]) < m)
        values[hit] = len(_CATEGORICAL_FEATURES[feature])
    elif kind == "null_burst":
        hit = mask & (rng.random(values.shape[0]) < m)
        values[hit] = -1 if feature in _CATEGORICAL_FEATURES else np.nan


def _simulate_day(
    day: datetime,
    *,
    n: int,
    seed: int,
    card_effect: np.ndarray,
    scenarios: Sequence[Scenario],
    malformed_rate: float,
) -> dict[str, np.ndarray]:
    """All columns of one UTC day, drawn from that day's own generator."""
    ordinal = day.date().toordinal()
    rng = np.random.default_rng([seed, ordinal])
    day_us = _epoch_us(day)

    # Sorted uniforms in O(n) (normalised exponential spacings), mapped through the
    # diurnal inverse CDF so the times come out already sorted.
    gaps = rng.exponential(size=n + 1)
    u_time = np.cumsum(gaps)[:-1] / gaps.sum()
    hour_idx = np.clip(np.searchsorted(_DIURNAL_CUM, u_time, side="right") - 1, 0, 23)
    frac = (u_time - _DIURNAL_CUM[hour_idx]) / _DIURNAL_P[hour_idx]
    offset_us = np.minimum(((hour_idx + frac) * 3_600e6).astype(np.int64), 86_400_000_000 - 1)
    event_us = day_us + offset_us

    pool = card_effect.shape[0]
    card_idx = np.minimum((pool * rng.random(n) ** 1.5).astype(np.int64), pool - 1)  # some cards busier
    category = _sample_codes(rng.random(n), _CATEGORY_P)
    country = _sample_codes(rng.random(n), _COUNTRY_P)
    country[rng.random(n) < _COUNTRY_NULL_SHARE] = -1
    channel_cum = np.cumsum(_CHANNEL_P[category], axis=1)
    channel = (rng.random(n)[:, None] > channel_cum[:, :2]).sum(axis=1).astype(np.int64)

    card_level = _LOG_AMOUNT_BASE + card_effect[card_idx]
    amount = np.exp(card_level + _CATEGORY_LOG_OFFSET[category] + rng.normal(0.0, _AMOUNT_LOG_SD, n))
    amount = np.round(np.maximum(amount, 0.5), 2)
    avg = np.round(np.exp(card_level + _AVG_LOG_OFFSET + rng.normal(0.0, _AVG_LOG_SD, n)), 2)
    new_card = rng.random(n) < _NEW_CARD_SHARE
    avg[new_card] = np.nan
    txn = rng.negative_binomial(_TXN_NB_N, _TXN_NB_P, n).astype(np.float64)
    txn[new_card] = np.floor(txn[new_card] * 0.15)  # new cards have little history
    u_label = rng.random(n)
    jitter_us = rng.integers(0, 86_400_000_000, n, endpoint=True)

    cols: dict[str, np.ndarray] = {
        "amount": amount,
        "hour": hour_idx.astype(np.float64),
        "day_of_week": np.full(n, float(day.weekday())),
        "txn_count_30d": txn,
        "avg_amount_7d": avg,
        "merchant_category": category,
        "country": country,
        "channel": channel,
    }

    drifted = np.zeros(n, dtype=bool)
    for scenario in scenarios:
        mask = event_us >= _epoch_us(scenario.start)
        if not mask.any():
            continue
        if scenario.kind == "concept_drift":
            drifted |= mask
        else:
            _apply_scenario(cols, mask, scenario, _scenario_rng(seed, ordinal, scenario))

    score_inputs = dict(
        amount=cols["amount"],
        avg=cols["avg_amount_7d"],
        hour=cols["hour"],
        txn_count=cols["txn_count_30d"],
        online=cols["channel"] == CHANNELS.index("online"),
        pos=cols["channel"] == CHANNELS.index("pos"),
        atm=cols["channel"] == CHANNELS.index("atm"),
        # codes 1..k-1 are the non-US countries; null/new values contribute nothing.
        cross_border=(cols["country"] >= 1) & (cols["country"] < len(COUNTRIES)),
        risky_category=np.isin(cols["merchant_category"], _category_codes(_RISKY_CATEGORIES)),
        drift_category=np.isin(cols["merchant_category"], _category_codes(_DRIFT_CATEGORIES)),
    )
    prob = _score(**score_inputs, concept="baseline")
    if drifted.any():
        prob = np.where(drifted, _score(**score_inputs, concept="drifted"), prob)
    label = (u_label < prob).astype(np.int64)

    # Malformations last, from the same day generator: they never disturb the draws above.
    kind = np.full(n, -1, dtype=np.int64)
    n_bad = int(np.floor(malformed_rate * n + 0.5))
    if n_bad:
        rows = rng.choice(n, size=n_bad, replace=False)
        kinds = (np.arange(n_bad) + rng.integers(len(MALFORMED_KINDS))) % len(MALFORMED_KINDS)
        kind[rows] = kinds
        k = {name: rows[kinds == i] for i, name in enumerate(MALFORMED_KINDS)}
        cols["amount"][k["nan"]] = np.nan
        cols["avg_amount_7d"][k["pos_inf"]] = np.inf
        cols["avg_amount_7d"][k["neg_inf"]] = -np.inf
        cols["amount"][k["negative_amount"]] = -np.round(rng.uniform(0.01, 500.0, k["negative_amount"].size), 2)
        cols["hour"][k["hour_out_of_range"]] = rng.integers(24, 100, k["hour_out_of_range"].size).astype(np.float64)
        cols["merchant_category"][k["unknown_category"]] = len(MERCHANT_CATEGORIES) + 1
        wrong = k["wrong_type"]
        cols["txn_count_30d"][wrong] = np.nan_to_num(np.floor(cols["txn_count_30d"][wrong])) + rng.uniform(
            0.1, 0.9, wrong.size
        ).round(2)

    cols["transaction_id"] = ordinal * ID_STRIDE + np.arange(n, dtype=np.int64)
    cols["card_id"] = 1_000_000 + card_idx
    cols["event_us"] = event_us
    cols["label"] = label
    cols["observed_us"] = event_us + jitter_us
    cols["malformed_kind"] = kind
    return cols


def _empty_day() -> dict[str, np.ndarray]:
    """Zero-length columns with the dtypes of a simulated day (for an empty range)."""
    ints = ("merchant_category", "country", "channel", "transaction_id", "card_id", "event_us",
            "label", "observed_us", "malformed_kind")
    return {
        **{key: np.empty(0, dtype=np.int64) for key in ints},
        **{key: np.empty(0, dtype=np.float64) for key in _NUMERIC_FEATURES},
    }


def _as_strings(codes: np.ndarray, values: tuple[str, ...], feature: str) -> np.ndarray:
    """Codes -> object array of str/None (-1 null, k new_<feature>, k+1 malformed)."""
    lookup = np.array([*values, f"new_{feature}", UNKNOWN_CATEGORY, None], dtype=object)
    return lookup[codes]


def _utc_times(us: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(us.astype("datetime64[us]")).tz_localize("UTC")


def simulate(
    start: datetime,
    end: datetime,
    *,
    rows_per_day: int,
    seed: int = 7,
    scenarios: Sequence[Scenario] = (),
    malformed_rate: float = 0.0,
    label_delay: timedelta = timedelta(days=3),
) -> SimulatedBatch:
    """Simulate UTC days in [start, end) with exactly ``rows_per_day`` rows each.

    Each day uses ``np.random.default_rng([seed, day.toordinal()])`` only, so
    splitting a range across calls yields the same rows.  Order per day: base
    features, scenarios, labels (from the rule in force), malformations.
    Outcomes become observable ``label_delay`` plus 0-24 h after the event.
    """
    start_utc, end_utc = _to_utc(start, "start"), _to_utc(end, "end")
    for name, value in (("start", start_utc), ("end", end_utc)):
        if (value.hour, value.minute, value.second, value.microsecond) != (0, 0, 0, 0):
            raise ValueError(f"{name} must be midnight-aligned, got {value.isoformat()}")
    if end_utc < start_utc:
        raise ValueError(f"end {end_utc.isoformat()} is before start {start_utc.isoformat()}")
    if not 0 < int(rows_per_day) < ID_STRIDE:
        raise ValueError(f"rows_per_day must be in [1, {ID_STRIDE}), got {rows_per_day!r}")
    if not 0.0 <= malformed_rate <= 1.0:
        raise ValueError(f"malformed_rate must be in [0, 1], got {malformed_rate!r}")
    if label_delay < timedelta(0):
        raise ValueError(f"label_delay must be non-negative, got {label_delay!r}")
    for scenario in scenarios:
        if not isinstance(scenario, Scenario):
            raise ValueError(f"expected Scenario instances, got {scenario!r}")

    n = int(rows_per_day)
    pool = max(1000, n // 5)
    # Card-level spending habits: fixed per (seed, pool), independent of the dates.
    card_effect = np.random.default_rng([seed, 0xCA2D]).normal(0.0, _CARD_LOG_SD, pool)

    n_days = (end_utc - start_utc).days
    days = [
        _simulate_day(
            start_utc + timedelta(days=i),
            n=n,
            seed=seed,
            card_effect=card_effect,
            scenarios=scenarios,
            malformed_rate=malformed_rate,
        )
        for i in range(n_days)
    ]
    parts = days or [_empty_day()]
    cat = {key: np.concatenate([d[key] for d in parts]) for key in parts[0]}

    transactions = pd.DataFrame(
        {
            "transaction_id": cat["transaction_id"],
            "card_id": cat["card_id"],
            "event_time": _utc_times(cat["event_us"]),
            **{f: cat[f].astype(np.float64, copy=False) for f in _NUMERIC_FEATURES},
            **{f: _as_strings(cat[f], values, f) for f, values in _CATEGORICAL_FEATURES.items()},
        },
        columns=TRANSACTION_COLUMNS,
    )
    delay_us = int(label_delay / timedelta(microseconds=1))
    outcomes = pd.DataFrame(
        {
            "entity_id": pd.Series(cat["transaction_id"]).astype(str),
            "label": cat["label"],
            "observed_at": _utc_times(cat["observed_us"] + delay_us),
        },
        columns=OUTCOME_COLUMNS,
    )
    kind_lookup = np.array([*MALFORMED_KINDS, None], dtype=object)
    malformed = pd.Series(kind_lookup[cat["malformed_kind"]], index=transactions.index, dtype=object,
                          name="malformed_kind")
    return SimulatedBatch(transactions=transactions, outcomes=outcomes, malformed=malformed)
