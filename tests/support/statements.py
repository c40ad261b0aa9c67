"""Counting what the database is sent: every statement and every commit of every engine in this
process while the block runs, with the SQL kept for the failure message."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine


@dataclass
class Counted:
    statements: list[str] = field(default_factory=list)
    commits: int = 0
    rollbacks: int = 0

    @property
    def round_trips(self) -> int:
        """Statements plus COMMIT and ROLLBACK, each a query the server counts."""
        return len(self.statements) + self.commits + self.rollbacks


@contextmanager
def counting_statements() -> Iterator[Counted]:
    counted = Counted()

    def statement(_conn: Connection, _cursor: Any, sql: str, *_args: Any) -> None:
        counted.statements.append(" ".join(sql.split())[:200])

    def commit(_conn: Connection) -> None:
        counted.commits += 1

    def rollback(_conn: Connection) -> None:
        counted.rollbacks += 1

    listeners = (("before_cursor_execute", statement), ("commit", commit), ("rollback", rollback))
    for name, listener in listeners:
        event.listen(Engine, name, listener)
    try:
        yield counted
    finally:
        for name, listener in listeners:
            event.remove(Engine, name, listener)
