"""Salted key buckets: every split of entities by a hash of their key goes through here.

The drift check's sample uses it, canary arms and (on SQLite) scoring shards too. Each use has a salt
of its own, so no split correlates with another: the entities in a canary arm are not the drift
sample's, and a shard is not an arm. On PostgreSQL shards follow its own hash partitioning instead
(warehouse.stages.shard_sql), a hash seeded apart from every salt here. A key's bucket never changes, so a split is the same on every run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

BUCKETS = 1 << 20

DRIFT_SAMPLE = "drift-sample"
CANARY_ARM = "canary-arm"
# The nightly job's scoring shards on SQLite (on PostgreSQL shards follow its hash partitioning: warehouse.stages.shard_sql).
SCORING_SHARD = "scoring-shard"
# The chaos drill's noise scores and its share of flipped labels (monitoring.drill).
CHAOS_DRILL = "chaos-drill"


def bucket(key: str | None, salt: str) -> int:
    """The key's bucket in [0, BUCKETS) under `salt`, computed in Python (SQLite calls it as a function).

    A keyed BLAKE2b, not a CRC: a CRC is affine in its input, so the buckets of one key under two salts
    differ by a constant XOR and every half split would be the same split (or its complement) whatever the salt.
    """
    digest = hashlib.blake2b((key or "").encode(), digest_size=8, key=salt.encode()[:64]).digest()
    return int.from_bytes(digest, "big") & (BUCKETS - 1)


def salt_seed(salt: str) -> int:
    """The salt as a signed 64-bit seed, for PostgreSQL's hashtextextended(text, seed)."""
    return int.from_bytes(hashlib.sha256(salt.encode()).digest()[:8], "big", signed=True)


def canary_salt(model_name: str, release_id: int) -> str:
    """A canary's own salt: each release draws fresh arms, so one canary's treatment entities are not the next one's."""
    return f"{CANARY_ARM}:{model_name}:{release_id}"


def shard_salt(model_name: str) -> str:
    """A model's shard salt: its own, so a shard is neither a canary arm nor the drift sample."""
    return f"{SCORING_SHARD}:{model_name}"


def in_share(keys: Sequence[str], salt: str, share: float) -> np.ndarray:
    """Whether each key falls in the first `share` of the buckets: raising the share only adds keys, never moves one out."""
    cut = round(share * BUCKETS)
    return np.fromiter((bucket(key, salt) < cut for key in keys), dtype=bool, count=len(keys))
