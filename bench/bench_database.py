"""The benchmarks' own PostgreSQL database, made afresh for each run."""

from __future__ import annotations

from sqlalchemy.engine import Engine


def fresh_warehouse(server: str, name: str) -> Engine:
    """Drop and create database `name` on `server`, migrate it, and return an engine on it."""
    import psycopg

    from batchwatch.warehouse import make_engine, migrate

    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    engine = make_engine(f"{server}/{name}")
    migrate(engine)
    return engine
