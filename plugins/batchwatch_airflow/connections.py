"""Turn the Airflow connection of the warehouse into a SQLAlchemy engine of the core, and the artifact key into its environment."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from airflow.sdk import BaseHook, Variable

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


def warehouse_url(conn_id: str) -> str:
    """The connection as a URL (`AIRFLOW_CONN_WAREHOUSE`: postgresql://... or sqlite:////abs/path.db).

    PostgreSQL: the postgres provider's hook builds the URL (its scheme, `sqlalchemy_query` and IAM
    extras), and the libpq options it passes to its own connections (sslmode, ...) go in the query,
    so the engine connects the way the hook does.
    """
    connection = BaseHook.get_connection(conn_id)
    if connection.conn_type == "sqlite":
        return f"sqlite:///{connection.schema or connection.host}"
    if connection.conn_type in ("postgres", "postgresql"):
        # Imported here: the DAG file imports this module, and the hook imports psycopg.
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        hook = PostgresHook(postgres_conn_id=conn_id)
        options = {name: str(value) for name, value in connection.extra_dejson.items() if name not in hook.ignored_extra_options}
        return hook.sqlalchemy_url.update_query_dict(options).render_as_string(hide_password=False)
    raise ValueError(f"connection {conn_id!r} has type {connection.conn_type!r}; the warehouse must be postgres or sqlite")


def warehouse_engine(conn_id: str) -> Engine:
    from batchwatch.warehouse import make_engine

    return make_engine(warehouse_url(conn_id))


# The Airflow Variable that may hold the artifact signing key (a secrets backend can serve it).
ARTIFACT_KEY_AIRFLOW_VARIABLE = "batchwatch_artifact_key"


def artifact_key_into_environment() -> None:
    """Give the core, which reads the artifact key from the environment only, the key kept as an Airflow Variable.

    A key already in the task's environment wins. Variable.get registers the value with Airflow's secrets
    masker, so it never shows in a task log.
    """
    from batchwatch.registry import ARTIFACT_KEY_VARIABLE

    if os.environ.get(ARTIFACT_KEY_VARIABLE):
        return
    key = Variable.get(ARTIFACT_KEY_AIRFLOW_VARIABLE, default=None)
    if key:
        os.environ[ARTIFACT_KEY_VARIABLE] = key
