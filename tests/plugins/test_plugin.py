"""plugins/ holds one Airflow plugin: the loader finds `batchwatch`, executes nothing else, and imports no heavy library."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "plugins"
HEAVY = ("pandas", "sklearn", "scipy")


def test_airflow_lists_exactly_the_batchwatch_plugin():
    """What `airflow plugins` prints is what the API server and every task load."""
    airflow = Path(sys.executable).parent / "airflow"
    result = subprocess.run([str(airflow), "plugins", "--output", "json"], capture_output=True, text=True, env=os.environ.copy())
    assert result.returncode == 0, result.stdout + result.stderr
    plugins = json.loads(result.stdout)
    assert [plugin["name"] for plugin in plugins] == ["batchwatch"]
    assert plugins[0]["source"].endswith("batchwatch_plugin.py")


@pytest.mark.parametrize("syntax", ["glob", "regexp"])
def test_the_loader_executes_only_the_plugin_module(syntax):
    """`.airflowignore` hides the package in either ignore syntax Airflow may be configured with."""
    from airflow._shared.module_loading import find_path_from_directory

    executed = sorted(Path(path).relative_to(PLUGINS) for path in find_path_from_directory(PLUGINS, ".airflowignore", syntax) if path.endswith(".py"))
    assert executed == [Path("batchwatch_plugin.py")]


def _fresh_interpreter(code: str) -> list[str]:
    """Run `code` in a new interpreter with the test environment; return the heavy modules it left imported."""
    probe = f"{code}\nimport sys\nprint('heavy:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, env=os.environ.copy())
    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stdout.splitlines() if line.startswith("heavy:")]
    return [name for name in line.removeprefix("heavy:").split(",") if name]


def test_importing_the_plugin_module_is_cheap():
    assert _fresh_interpreter("import runpy; runpy.run_path('plugins/batchwatch_plugin.py')") == []


def test_loading_the_plugins_imports_no_heavy_library():
    """The API server and every task load the plugins: none of them should pay for pandas, sklearn or scipy."""
    assert _fresh_interpreter("from airflow import plugins_manager; plugins_manager._get_plugins()") == []
