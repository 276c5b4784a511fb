"""Turn the Airflow connection of the warehouse into a SQLAlchemy engine of the core."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


def warehouse_url(conn_id: str) -> str:
    """The connection as a URL (`AIRFLOW_CONN_WAREHOUSE`: postgresql://... or sqlite:////abs/path.db)."""
    connection = BaseHook.get_connection(conn_id)
    if connection.conn_type == "sqlite":
        return f"sqlite:///{connection.schema or connection.host}"
    if connection.conn_type in ("postgres", "postgresql"):
        return connection.get_uri()
    raise ValueError(f"connection {conn_id!r} has type {connection.conn_type!r}; the warehouse must be postgres or sqlite")


def warehouse_engine(conn_id: str) -> Engine:
    from batchwatch.warehouse import make_engine

    return make_engine(warehouse_url(conn_id))
