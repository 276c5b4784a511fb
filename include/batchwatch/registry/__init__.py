"""The model registry: versions, aliases and their audit log in the warehouse; artifacts on disk.

An artifact is the whole fitted sklearn Pipeline dumped with joblib. Its sha256 is recorded at
registration and checked before every load: a file that does not match is never unpickled. With
BATCHWATCH_ARTIFACT_KEY set, an HMAC signature under that key is recorded and checked as well.
"""

from batchwatch.registry.artifacts import (
    ARTIFACT_KEY_VARIABLE,
    ArtifactIntegrityError,
    RegistryError,
    UnsignedArtifact,
    artifact_key,
    artifact_path,
    artifact_root,
    dump_artifact,
    read_artifact,
    sign_artifact,
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
    sign_versions,
    threshold_of,
)

__all__ = [
    "ARTIFACT_KEY_VARIABLE", "UnsignedArtifact", "artifact_key", "sign_artifact", "sign_versions",
    "ALIASES", "CHAMPION_EVENTS", "DATA_FINGERPRINT", "LEGACY_THRESHOLD", "ArtifactIntegrityError", "ChampionTerm", "LoadedModel", "RegistryError",
    "alias_version", "alias_version_in", "artifact_path", "artifact_root", "champion_at", "champion_terms", "decision_of", "dump_artifact",
    "get_version", "load_alias", "load_version", "lock_model", "mark_rolled_back", "pipeline_steps", "point_alias", "read_artifact",
    "record_event", "register", "rolled_back_from", "set_alias", "threshold_of", "write_artifact",
]
