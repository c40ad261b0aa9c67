"""DDL a revision can run again: MariaDB and MySQL commit each DDL statement by itself, and
alembic_version is written last, so a revision stopped half-way (a timeout, a SIGKILL, a lost
connection) left its first indexes built, and every later `payouts migrate` died on "Duplicate
key name" until someone dropped them by hand."""

import sqlalchemy as sa
from alembic import op


def _indexes_of(table: str) -> set[str]:
    return {
        index["name"] for index in sa.inspect(op.get_bind()).get_indexes(table) if index["name"]
    }


def create_index_unless_present(name: str, table: str, columns: list[str]) -> None:
    if name not in _indexes_of(table):
        op.create_index(name, table, columns)


def drop_index_if_present(name: str, table: str) -> None:
    if name in _indexes_of(table):
        op.drop_index(name, table_name=table)
