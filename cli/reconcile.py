"""`payouts reconcile`: check every ledger invariant against PAYOUTS_DATABASE_URL."""

import asyncio

import typer

from contracts.db.engine import create_engine, create_session_factory
from contracts.reconcile import LedgerSize, ledger_size, reconcile
from contracts.settings import get_settings


async def _check(database_url: str) -> tuple[list[str], LedgerSize]:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with create_session_factory(engine)() as session:
            # Both in the one snapshot reconcile opens, so the counts match what was checked.
            problems = await reconcile(session)
            return problems, await ledger_size(session)
    finally:
        await engine.dispose()


def reconcile_command() -> None:
    """Check the ledger: journals balance, balances match their lines, nothing negative, each
    hold settled at most once, held funds equal the payouts in flight. Exit 1 on any problem."""
    problems, size = asyncio.run(_check(get_settings().database_url))
    for problem in problems:
        typer.echo(problem)
    if problems:
        typer.echo(f"ledger NOT reconciled: {len(problems)} problem(s)", err=True)
        raise typer.Exit(1)
    typer.echo(f"ledger reconciled: {size.merchants} merchants, {size.journals} journals, clean")
