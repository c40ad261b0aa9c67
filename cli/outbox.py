"""`payouts outbox list-parked|retry`: outbox rows the relay parked after the broker refused them
`PAYOUTS_RELAY_MAX_PUBLISH_ATTEMPTS` times (unroutable, nacked), and handing them back to it.
Fix the cause first (a missing binding, a full queue), then retry."""

import json
from typing import Annotated, Any

import typer

from contracts.db.models import OutboxMessage
from contracts.pipeline_health import parked_outbox_rows
from contracts.topology import PAYOUT_ID_HEADER
from contracts.wire import format_timestamp

outbox_app = typer.Typer(help="Outbox rows the relay parked.", no_args_is_help=True)


def _as_json(row: OutboxMessage) -> dict[str, Any]:
    return {
        "id": row.id,
        "exchange": row.exchange,
        "routing_key": row.routing_key,
        "payout_id": row.headers.get(PAYOUT_ID_HEADER),
        "publish_attempts": row.publish_attempts,
        # In UTC, and saying so: a naive time read on a Karachi host was 5 hours off.
        "parked_at": format_timestamp(row.parked_at) if row.parked_at else None,
        "last_error": row.last_error,
    }


@outbox_app.command("list-parked")
def list_parked_command(
    # A LIMIT past a BIGINT was MySQL's syntax error, a traceback.
    limit: Annotated[int, typer.Option(min=1, max=2**63 - 1, help="At most this many")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
) -> None:
    """Show the parked outbox rows, oldest first (they stay parked)."""
    from cli.main import run_in_transaction  # cli.main imports this module

    rows = run_in_transaction(parked_outbox_rows, limit)
    for row in rows:
        if as_json:
            typer.echo(json.dumps(_as_json(row)))
        else:
            typer.echo(
                f"{row.id}  {row.exchange or '(default)'} {row.routing_key}  "
                f"payout={row.headers.get(PAYOUT_ID_HEADER)}  attempts={row.publish_attempts}  "
                f"parked={row.parked_at:%Y-%m-%d %H:%M:%S} UTC\n    {row.last_error}"
            )
    typer.echo(f"{len(rows)} parked row(s) shown", err=True)


@outbox_app.command("retry")
def retry_command(
    row_id: Annotated[int | None, typer.Argument(help="A parked row's id")] = None,
    all_rows: Annotated[bool, typer.Option("--all", help="Every parked row")] = False,
) -> None:
    """Hand parked rows back to the relay: due at once, with a fresh count of attempts."""
    from cli.main import run_in_transaction  # cli.main imports this module
    from processor_service.outbox_relay import retry_parked

    if (row_id is None) != all_rows:
        raise typer.BadParameter("give either a row ID or --all")
    retried = run_in_transaction(retry_parked, row_id)
    if row_id is not None and not retried:
        typer.echo(f"no parked outbox row {row_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{retried} outbox row(s) handed back to the relay")
