"""Artifacts on disk: a fitted pipeline as joblib bytes, written atomically, read only if its sha256 matches."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import joblib

from batchwatch.errors import PermanentError

DEFAULT_ARTIFACT_ROOT = Path(__file__).resolve().parents[3] / "var" / "artifacts"


class RegistryError(PermanentError, RuntimeError):
    """A registry operation that cannot proceed; the message says what to do about it."""


class ArtifactIntegrityError(RegistryError):
    """The artifact on disk is not the one that was registered."""


def artifact_root() -> Path:
    return Path(os.environ.get("BATCHWATCH_ARTIFACT_ROOT", DEFAULT_ARTIFACT_ROOT))


def dump_artifact(pipeline: Any) -> tuple[bytes, str]:
    """The pipeline as joblib bytes, and their sha256."""
    buffer = io.BytesIO()
    joblib.dump(pipeline, buffer)
    blob = buffer.getvalue()
    return blob, hashlib.sha256(blob).hexdigest()


def write_artifact(path: Path, blob: bytes) -> None:
    """Write through a temporary file and a rename, so no reader ever sees half an artifact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as handle:
        handle.write(blob)
    os.replace(handle.name, path)


def read_artifact(path: Path, sha256: str, what: str) -> Any:
    """Unpickle the artifact at `path` only if its bytes still have the sha256 recorded when it was written."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise RegistryError(f"artifact of {what} is missing at {path}") from None
    actual = hashlib.sha256(blob).hexdigest()
    if actual != sha256:
        raise ArtifactIntegrityError(
            f"artifact of {what} at {path} has sha256 {actual}, but {sha256} was recorded when it was written; "
            "refusing to unpickle it. Restore the original file, or train and register a new version."
        )
    return joblib.load(io.BytesIO(blob))


def artifact_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise RegistryError(f"unsupported artifact URI {uri!r}: only file:// artifacts are supported")
    return Path(url2pathname(parsed.path))
