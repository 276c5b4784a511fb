"""Batch scoring: which models score (models, routing) and one interval scored atomically (batch), whole or in shards."""

from batchwatch.scoring.batch import (
    DuplicateEntity,
    RejectRateExceeded,
    ShardsDisagree,
    predict_interval,
    publish_shards,
    score_shard,
    source_query,
)
from batchwatch.scoring.models import NoChampion, load_champion, score

__all__ = [
    "DuplicateEntity", "NoChampion", "RejectRateExceeded", "ShardsDisagree", "load_champion", "predict_interval", "publish_shards",
    "score", "score_shard", "source_query",
]
