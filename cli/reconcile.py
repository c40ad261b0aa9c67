"""`payouts reconcile`: check every ledger invariant against PAYOUTS_DATABASE_URL."""

from datetime import timedelta
from typing import Annotated

import typer
from sqlalchemy.exc import DBAPIError

from cli.database import command_engine
from cli.outages import run_in_one_line
from contracts.clock import MerchantTime
from contracts.db.engine import SessionFactory, create_session_factory
from contracts.ledger_audit import Audit, record_audit, timed_reconcile
from contracts.pipeline_health import Thresholds, pipeline_problems
from contracts.reconcile import LedgerSize, ledger_size
from contracts.settings import Settings, get_settings
from contracts.waiting_retries import UNDELIVERED_EVENTS_LOOKBACK

# A threshold past a century is refused (exit 2, naming the option): `inf` or 1e12 overflowed the
# date arithmetic into a traceback.
A_CENTURY = timedelta(days=36500)


async def _check(
    settings: Settings, thresholds: Thresholds
) -> tuple[list[str], list[str], LedgerSize]:
    """The ledger's problems, the pipeline's, and the ledger's size."""
    engine = command_engine(settings)
    sessions = create_session_factory(engine)
    try:
        async with sessions() as session:
            # Both in the one snapshot reconcile opens, so the counts match what was checked.
            audit = await timed_reconcile(session)
            size = await ledger_size(session)
            time = MerchantTime.of(settings)
            pipeline = await pipeline_problems(session, thresholds, time)
        await _record(sessions, audit)
        return audit.problems, pipeline, size
    finally:
        await engine.dispose()


async def _record(sessions: SessionFactory, audit: Audit) -> None:
    """For the Operations page, which shows the last audit. A check that cannot write (a
    read-only account, a replica) still gives its verdict: it was lost to the refused UPDATE."""
    try:
        await record_audit(sessions, audit)
    except DBAPIError as refused:
        typer.echo(f"(the audit is not recorded for the Operations page: {refused.orig})", err=True)


def reconcile_command(
    stuck_minutes: Annotated[
        float,
        typer.Option(
            min=0,
            max=A_CENTURY / timedelta(minutes=1),
            help="A payout PROCESSING/RETRY/unsubmitted, a scheduled step or expiry past due, a "
            "PSP outcome not applied, an event no webhook service took up, a webhook PENDING "
            "with no attempt or a webhook retry past due, this long, is stuck",
        ),
    ] = 5,
    max_outbox_lag_seconds: Annotated[
        float,
        typer.Option(
            min=0,
            max=A_CENTURY.total_seconds(),
            help="An unsent outbox row this old is a problem",
        ),
    ] = 60,
) -> None:
    """Check the ledger: journals balance, balances match their lines, nothing negative, each
    hold settled at most once, held funds equal the payouts in flight, each payout's journals
    move its amount between the right accounts and match its status; and the pipeline: no
    payout stuck, no active merchant's queued payout its balance covers, no scheduled action long
    due, no PSP outcome accepted and not applied, no outbox lag, no parked outbox row, no event
    of the last day no webhook service took up, no webhook left PENDING with no attempt, no
    webhook retry long overdue. Exit 1 on any problem."""
    settings = get_settings()
    thresholds = Thresholds.of(
        settings,
        stuck_after=timedelta(minutes=stuck_minutes),
        max_outbox_lag=timedelta(seconds=max_outbox_lag_seconds),
        undelivered_events_lookback=UNDELIVERED_EVENTS_LOOKBACK,
    )
    ledger, pipeline, size = run_in_one_line(_check(settings, thresholds))
    for problem in ledger + pipeline:
        typer.echo(problem)
    if ledger or pipeline:
        typer.echo(_verdict(ledger, pipeline, size), err=True)
        raise typer.Exit(1)
    typer.echo(f"ledger reconciled: {size.merchants} merchants, {size.journals} journals, clean")


def _verdict(ledger: list[str], pipeline: list[str], size: LedgerSize) -> str:
    """The summary of a check that found problems, naming the part that has them: a stuck
    pipeline beside a clean ledger said "ledger NOT reconciled" (reconcile review)."""
    if not pipeline:
        return f"ledger NOT reconciled: the {len(ledger)} line(s) above"
    stuck = f"pipeline NOT flowing: the last {len(pipeline)} line(s) above"
    if not ledger:
        return f"ledger reconciled ({size.merchants} merchants, {size.journals} journals); {stuck}"
    return f"ledger NOT reconciled: the first {len(ledger)} line(s) above; {stuck}"
