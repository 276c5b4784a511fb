"""The models an interval is scored with: the champion, checked against the spec, and the challenger if usable."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from batchwatch import registry
from batchwatch.errors import PermanentError
from batchwatch.registry import LoadedModel
from batchwatch.spec import ModelSpec

log = logging.getLogger(__name__)


class NoChampion(PermanentError, RuntimeError):
    """There is no model to score with yet."""


def score(pipeline: Any, features: pd.DataFrame) -> np.ndarray:
    """Positive-class probability; the one place a pipeline is asked for a score (sklearn refuses zero rows)."""
    return pipeline.predict_proba(features)[:, 1] if len(features) else np.empty(0)


def check_features(spec: ModelSpec, model: LoadedModel) -> None:
    if model.features != spec.model_features:
        raise registry.RegistryError(
            f"{spec.name} v{model.version} was trained on features {model.features}, but the spec now gives "
            f"{spec.model_features}; register a model trained on the current spec, or restore the spec"
        )


def load_champion(engine: Engine, spec: ModelSpec, consequence: str) -> LoadedModel:
    """The champion, checked against the spec's features; NoChampion, its message ending in `consequence`, if none."""
    champion = registry.load_alias(engine, spec.name, "champion", spec=spec)
    if champion is None:
        raise NoChampion(f"model {spec.name!r} has no champion{consequence}")
    check_features(spec, champion)
    return champion


def load_version(engine: Engine, spec: ModelSpec, version: int) -> LoadedModel:
    """A named version, checked against the spec's features."""
    model = registry.load_version(engine, spec.name, version, spec=spec)
    check_features(spec, model)
    return model


def load_challenger(engine: Engine, spec: ModelSpec, *, canary_version: int | None = None) -> tuple[LoadedModel | None, str | None]:
    """The challenger (during a canary, the version under test); if it cannot be used, the champion still scores and the summary says why."""
    try:
        if canary_version is None:
            challenger = registry.load_alias(engine, spec.name, "challenger", spec=spec)
        else:
            challenger = load_version(engine, spec, canary_version)
        if challenger is not None:
            check_features(spec, challenger)
        return challenger, None
    except registry.RegistryError as error:
        log.warning("Scoring without the shadow model: %s", error)
        return None, str(error)
