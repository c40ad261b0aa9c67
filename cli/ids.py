"""`payouts ids`: the row behind an id a merchant quotes, and back. The ids merchants see of
ledger lines and journals, request-log calls and scheduled actions are the rows' numbers through
the deployment's keyed permutation (contracts.public_ids); the database, the logs and the
correlation ids (`scheduled-action-<id>`) carry the rows' own."""

from typing import Annotated

import typer

from cli.database import command_engine
from cli.outages import run_in_one_line
from contracts.db.engine import create_session_factory
from contracts.public_ids import ID_LIMIT, PublicIds, load_public_ids
from contracts.settings import get_settings

ids_app = typer.Typer(
    help="Ids merchants see of shared counters (ledger lines, journals, request-log calls, "
    "scheduled actions), and the rows' own.",
    no_args_is_help=True,
)

AnId = Annotated[int, typer.Argument(min=1, max=ID_LIMIT - 1)]


async def _public_ids() -> PublicIds:
    engine = command_engine(get_settings())
    try:
        async with create_session_factory(engine)() as session:
            return await load_public_ids(session)
    finally:
        await engine.dispose()


@ids_app.command("internal")
def internal_command(public_id: AnId) -> None:
    """The row's own id behind an id a merchant quotes (its table is the one the id came from)."""
    internal = run_in_one_line(_public_ids()).internal(public_id)
    typer.echo(internal)


@ids_app.command("public")
def public_command(internal_id: AnId) -> None:
    """The id a merchant sees of a row (of ledger_lines, ledger_journals, api_requests or
    scheduled_actions)."""
    typer.echo(run_in_one_line(_public_ids()).public(internal_id))
