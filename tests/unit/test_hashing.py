"""Salted key buckets: each salt splits keys on its own, a split never moves a key, and a larger share only adds keys."""

from __future__ import annotations

import numpy as np
from scipy import stats

from batchwatch.hashing import DRIFT_SAMPLE, bucket, canary_salt, in_share

# Sequential ids, as a source's keys usually are: the case where a hash with structure (a CRC) splits alike under every salt.
KEYS = [str(7_398_740_000_000 + i) for i in range(100_000)]


def test_two_salts_split_the_same_keys_independently():
    """Under independence, a key is in both halves of two splits a quarter of the time: within four binomial SDs of it."""
    canary = in_share(KEYS, canary_salt("fraud", 1), 0.5)
    for other in (in_share(KEYS, DRIFT_SAMPLE, 0.5), in_share(KEYS, canary_salt("fraud", 2), 0.5)):
        both = int((canary & other).sum())
        assert abs(both - len(KEYS) / 4) < 4 * np.sqrt(len(KEYS) * 0.25 * 0.75), both


def test_a_share_takes_that_share_of_keys_and_a_larger_one_only_adds():
    salt = canary_salt("fraud", 7)
    shares = {share: in_share(KEYS, salt, share) for share in (0.05, 0.25, 0.5)}
    for share, chosen in shares.items():
        assert stats.binomtest(int(chosen.sum()), len(KEYS), share).pvalue > 1e-4
    assert not (shares[0.05] & ~shares[0.25]).any() and not (shares[0.25] & ~shares[0.5]).any()


def test_a_key_keeps_its_bucket():
    assert bucket("42", "s") == bucket("42", "s") != bucket("42", "t")
    assert in_share(KEYS[:1000], "s", 0.3).tolist() == in_share(KEYS[:1000], "s", 0.3).tolist()
