"""Batch scoring: which models score (models, routing) and one interval scored atomically (batch)."""

from batchwatch.scoring.batch import DuplicateEntity, RejectRateExceeded, predict_interval, source_query
from batchwatch.scoring.models import NoChampion, load_champion, score

__all__ = ["DuplicateEntity", "NoChampion", "RejectRateExceeded", "load_champion", "predict_interval", "score", "source_query"]
