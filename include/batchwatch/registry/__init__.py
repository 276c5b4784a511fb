"""The model registry: versions, aliases and their audit log in the warehouse; artifacts on disk.

An artifact is the whole fitted sklearn Pipeline dumped with joblib. Its sha256 is recorded at
registration and checked before every load: a file that does not match is never unpickled.
"""

from batchwatch.registry.artifacts import (
    ArtifactIntegrityError,
    RegistryError,
    artifact_path,
    artifact_root,
    dump_artifact,
    read_artifact,
    write_artifact,
)
from batchwatch.registry.store import (
    ALIASES,
    CHAMPION_EVENTS,
    DATA_FINGERPRINT,
    LEGACY_THRESHOLD,
    ChampionTerm,
    LoadedModel,
    alias_version,
    alias_version_in,
    champion_at,
    champion_terms,
    decision_of,
    get_version,
    load_alias,
    load_version,
    lock_model,
    mark_rolled_back,
    pipeline_steps,
    point_alias,
    record_event,
    register,
    rolled_back_from,
    set_alias,
    threshold_of,
)

__all__ = [
    "ALIASES", "CHAMPION_EVENTS", "DATA_FINGERPRINT", "LEGACY_THRESHOLD", "ArtifactIntegrityError", "ChampionTerm", "LoadedModel", "RegistryError",
    "alias_version", "alias_version_in", "artifact_path", "artifact_root", "champion_at", "champion_terms", "decision_of", "dump_artifact",
    "get_version", "load_alias", "load_version", "lock_model", "mark_rolled_back", "pipeline_steps", "point_alias", "read_artifact",
    "record_event", "register", "rolled_back_from", "set_alias", "threshold_of", "write_artifact",
]
