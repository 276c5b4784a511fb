"""The web app parses the specs once, and again as soon as a spec file changes."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_changed_spec_folder_is_read_again(tmp_path, monkeypatch) -> None:
    from batchwatch_airflow.web import security

    shutil.copy(ROOT / "include" / "models" / "fraud.yaml", tmp_path / "fraud.yaml")
    monkeypatch.setenv("BATCHWATCH_SPEC_DIRS", str(tmp_path))
    monkeypatch.setattr(security, "_loaded", None)
    first = security._specs()
    assert set(first) == {"fraud"}
    assert security._specs() is first, "unchanged files are not parsed again"
    shutil.copy(ROOT / "tests" / "specs" / "churn.yaml", tmp_path / "churn.yaml")
    assert set(security._specs()) == {"fraud", "churn"}
