"""The web app's warehouse engine reads and never writes, whatever the login may do."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from batchwatch.warehouse import make_engine


def test_a_read_only_engine_reads_and_refuses_every_write(warehouse_url):
    engine = make_engine(warehouse_url, read_only=True)
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT COUNT(*) FROM model_events")).scalar_one() == 0
    for statement in (
        "INSERT INTO model_events (model_name, event, reason, details, actor, created_at) VALUES ('m', 'e', 'r', '{}', 'a', CURRENT_TIMESTAMP)",
        "DELETE FROM alerts",
        "CREATE TABLE sneaky (x INTEGER)",
    ):
        with pytest.raises(sa.exc.DBAPIError, match=r"(?i)read-only|readonly|attempt to write"), engine.begin() as connection:
            connection.execute(sa.text(statement))
    engine.dispose()
    writable = make_engine(warehouse_url)
    with writable.begin() as connection:
        connection.execute(sa.text("DELETE FROM alerts"))
    writable.dispose()


def test_the_web_app_reads_the_warehouse_read_only(warehouse_url):
    from batchwatch_airflow.web import security

    engine = security.warehouse()
    with pytest.raises(sa.exc.DBAPIError), engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM alerts"))
