"""`payouts reconcile` after every run, through `contracts.reconcile.reconcile(session)` when this
checkout has it (it returns the discrepancies found; an empty list is clean)."""

import importlib
from collections.abc import Awaitable, Callable
from typing import cast

from sqlalchemy.ext.asyncio import AsyncSession

from contracts.db.engine import create_engine, create_session_factory

Reconcile = Callable[[AsyncSession], Awaitable[list[str]]]


def find_reconcile() -> Reconcile | None:
    try:
        module = importlib.import_module("contracts.reconcile")
    except ModuleNotFoundError:
        return None
    return cast(Reconcile | None, getattr(module, "reconcile", None))


async def reconcile_database(database_url: str) -> list[str] | None:
    """The discrepancies, or None when there is no reconciliation to run."""
    reconcile = find_reconcile()
    if reconcile is None:
        return None
    engine = create_engine(database_url, pool_size=1)
    try:
        async with create_session_factory(engine)() as session:
            return [str(problem) for problem in await reconcile(session)]
    finally:
        await engine.dispose()
