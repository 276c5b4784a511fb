"""FastAPI dependencies that put Airflow's own authentication and DAG authorisation on every Batchwatch route.

A plugin's FastAPI app is mounted with no auth at all, so each route depends on one of these. The
user comes from Airflow's `GetUserDep` (the UI's `_token` cookie or `Authorization: Bearer`); what
they may see follows the auth manager's answer for the model's DAGs: a model is readable only when
every one of its DAGs is. These are Airflow 3.3 internals (pinned in requirements.txt).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Annotated

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import Depends, HTTPException, status
from sqlalchemy.engine import Engine

from batchwatch.spec import ModelSpec, load_specs_and_errors, spec_dirs

# The DAGs the DAG factory makes per model (batchwatch_airflow.dag_factory.MODEL_DAGS), in the order the overview lists them.
JOBS = ("nightly_predict", "hourly_drift", "daily_performance", "weekly_retrain", "release", "rollback", "chaos_drill")
WAREHOUSE_CONN_ID = "warehouse"


def model_dag_ids(model_name: str) -> set[str]:
    return {f"{model_name}_{job}" for job in JOBS}


_loaded: tuple[tuple[tuple[str, int, int], ...], dict[str, ModelSpec]] | None = None


def _specs() -> dict[str, ModelSpec]:
    """The specs that load; a broken one shows as its `_spec_error` DAG in Airflow, not here.

    Parsed again only when a spec file changes (path, mtime, size), not on every request: parsing
    every spec cost a lookup ~16 ms.
    """
    global _loaded
    files = (path for directory in spec_dirs() for path in sorted(Path(directory).glob("*.yaml")))
    signature = tuple((str(path), (stat := path.stat()).st_mtime_ns, stat.st_size) for path in files)
    if _loaded is None or _loaded[0] != signature:
        _loaded = (signature, load_specs_and_errors()[0])
    return _loaded[1]


def _readable_dag_ids(user: GetUserDep, dag_ids: set[str]) -> set[str]:
    return get_auth_manager().filter_authorized_dag_ids(dag_ids=dag_ids, user=user, method="GET")


def readable_models(user: GetUserDep) -> list[ModelSpec]:
    """The models whose every DAG the user may read, by name."""
    specs = _specs()
    allowed = _readable_dag_ids(user, {dag_id for name in specs for dag_id in model_dag_ids(name)})
    return [spec for name, spec in sorted(specs.items()) if model_dag_ids(name) <= allowed]


def readable_model(model_name: str, user: GetUserDep) -> ModelSpec:
    """The `{model_name}` of the path: 404 when no spec names it, 403 unless the user may read all its DAGs."""
    spec = _specs().get(model_name)
    if spec is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no model named {model_name!r}; GET /batchwatch/api/models lists the models")
    missing = model_dag_ids(model_name) - _readable_dag_ids(user, model_dag_ids(model_name))
    if missing:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"you may not read the DAGs {sorted(missing)} of model {model_name!r}; ask an Airflow admin for access"
        )
    return spec


@cache
def _engine(url: str) -> Engine:
    from batchwatch.warehouse import make_engine  # imports pandas: only when a route first needs the warehouse

    return make_engine(url, read_only=True)  # the page, the API and /metrics only read: a bug here cannot write


def warehouse() -> Engine:
    """One engine per process and warehouse URL, from the Airflow connection `warehouse`."""
    from batchwatch_airflow.connections import warehouse_url

    return _engine(warehouse_url(WAREHOUSE_CONN_ID))


ReadableModel = Annotated[ModelSpec, Depends(readable_model)]
ReadableModels = Annotated[list[ModelSpec], Depends(readable_models)]
WarehouseDep = Annotated[Engine, Depends(warehouse)]
