"""Artifacts on disk: a fitted pipeline as joblib bytes, written atomically, read only if its sha256 matches.

The sha256 sits in the warehouse beside the path it protects, so whoever can write model_versions can swap a
file and its hash. With BATCHWATCH_ARTIFACT_KEY set, every artifact also carries an HMAC-SHA256 of its bytes
under that key, which the warehouse never holds; an artifact without a valid one is never unpickled.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import io
import logging
import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import joblib

from batchwatch.errors import PermanentError

DEFAULT_ARTIFACT_ROOT = Path(__file__).resolve().parents[3] / "var" / "artifacts"

ARTIFACT_KEY_VARIABLE = "BATCHWATCH_ARTIFACT_KEY"

log = logging.getLogger(__name__)


class RegistryError(PermanentError, RuntimeError):
    """A registry operation that cannot proceed; the message says what to do about it."""


class ArtifactIntegrityError(RegistryError):
    """The artifact on disk is not the one that was registered."""


class UnsignedArtifact(ArtifactIntegrityError):
    """An artifact key is configured, and the artifact has no signature to check."""


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


def artifact_key() -> bytes | None:
    """The key artifacts are signed with, from the process environment (an Airflow secret can fill it), never the warehouse."""
    key = os.environ.get(ARTIFACT_KEY_VARIABLE)
    return key.encode() if key else None


def sign_artifact(blob: bytes, key: bytes | None = None) -> str | None:
    """The HMAC-SHA256 of an artifact's bytes under `key` (default: the configured one); None when no key is configured."""
    key = artifact_key() if key is None else key
    return None if key is None else hmac.new(key, blob, hashlib.sha256).hexdigest()


@functools.cache
def _warn_unsigned() -> None:
    log.warning(
        "%s is not set: artifacts are checked against the sha256 in the warehouse only, which whoever can write "
        "model_versions can change with the file. Set a key to sign and verify artifacts.",
        ARTIFACT_KEY_VARIABLE,
    )


def check_signature(blob: bytes, signature: str | None, what: str, path: Path) -> None:
    """Refuse bytes whose signature is missing or wrong when a key is configured; without one, warn once and accept."""
    key = artifact_key()
    if key is None:
        _warn_unsigned()
        return
    if signature is None:
        raise UnsignedArtifact(
            f"artifact of {what} at {path} has no signature, and {ARTIFACT_KEY_VARIABLE} is set: refusing to unpickle it. "
            "Sign the registered versions whose files are intact (bin/batchwatch sign MODEL), or train and register a new version."
        )
    if not hmac.compare_digest(sign_artifact(blob, key), signature):
        raise ArtifactIntegrityError(
            f"artifact of {what} at {path} does not match its signature under {ARTIFACT_KEY_VARIABLE}: the file was not "
            "written by a holder of the key, or was signed with another key; refusing to unpickle it. Restore the original "
            "file, or train and register a new version."
        )


def read_artifact(path: Path, sha256: str, what: str, signature: str | None = None) -> Any:
    """Unpickle the artifact at `path` only if its bytes still have the sha256 recorded when it was written,
    and, when a key is configured, the signature made with it."""
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
    check_signature(blob, signature, what, path)
    return joblib.load(io.BytesIO(blob))


def artifact_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise RegistryError(f"unsupported artifact URI {uri!r}: only file:// artifacts are supported")
    return Path(url2pathname(parsed.path))
