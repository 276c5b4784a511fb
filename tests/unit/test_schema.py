"""The schema module describes what the migrations create, column for column, on PostgreSQL and SQLite."""

from __future__ import annotations

import sqlalchemy as sa

from batchwatch.warehouse import make_engine, schema


def _generic(column_type: sa.types.TypeEngine) -> str:
    """A column type as the family both dialects agree on (JSONB and JSON, DOUBLE PRECISION and FLOAT are one)."""
    for family, types in (
        ("json", (sa.JSON,)),
        ("float", (sa.Float,)),
        ("integer", (sa.Integer,)),
        ("timestamp", (sa.DateTime,)),
        ("date", (sa.Date,)),
        ("text", (sa.String, sa.Text)),
    ):
        if isinstance(column_type, types):
            return family
    return type(column_type).__name__


def test_every_table_matches_the_migrated_warehouse(warehouse_url) -> None:
    inspector = sa.inspect(make_engine(warehouse_url))
    assert set(schema.metadata.tables) <= set(inspector.get_table_names()), "a table the migrations do not create"
    for table in schema.metadata.sorted_tables:
        migrated = {column["name"]: column for column in inspector.get_columns(table.name)}
        assert [column.name for column in table.columns] == list(migrated), table.name
        for column in table.columns:
            actual = migrated[column.name]
            assert _generic(column.type) == _generic(actual["type"]), f"{table.name}.{column.name}"
            assert column.nullable == actual["nullable"], f"{table.name}.{column.name} nullable"
        assert [column.name for column in table.primary_key] == inspector.get_pk_constraint(table.name)["constrained_columns"], table.name
