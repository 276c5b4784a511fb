"""A peer library's own venv for a benchmark (never in requirements.txt): made from its requirements file when missing."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peer_python(name: str) -> Path:
    """The Python of `.venv-<name>`, made from `bench/<name>/requirements.txt` on first use."""
    venv = ROOT / f".venv-{name}"
    python = venv / "bin" / "python"
    if not python.exists():
        requirements = ROOT / "bench" / name / "requirements.txt"
        print(f"{venv} is missing; creating it from {requirements.relative_to(ROOT)}", flush=True)
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True, cwd=ROOT)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-r", str(requirements)], check=True, cwd=ROOT)
    return python
