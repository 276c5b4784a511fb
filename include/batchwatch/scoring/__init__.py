"""Batch scoring: which models score (models, routing) and one interval scored atomically, whole (batch) or in shards (shards)."""

from batchwatch.scoring.batch import DuplicateEntity, RejectRateExceeded, predict_interval, source_query
from batchwatch.scoring.models import NoChampion, load_champion, score
from batchwatch.scoring.shards import ShardsDisagree, publish_shards, score_shard

__all__ = [
    "DuplicateEntity", "NoChampion", "RejectRateExceeded", "ShardsDisagree", "load_champion", "predict_interval", "publish_shards",
    "score", "score_shard", "source_query",
]
