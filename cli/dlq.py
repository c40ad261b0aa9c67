"""`payouts dlq list|redrive QUEUE`: what sits in a work queue's dead-letter queue, and moving
it back. Redriven messages keep their message id (consumers stay idempotent on it) and start
their retries afresh. Parked webhooks have their own command: `payouts webhooks replay-parked`.
"""

import json
from typing import Annotated

import typer

from cli.outages import outages_in_one_line, run_in_one_line
from contracts.dead_letters import peek, redrive
from contracts.settings import get_settings
from contracts.topology import all_work_queues

dlq_app = typer.Typer(help="Inspect and re-drive dead-lettered messages.", no_args_is_help=True)


def _work_queue_names() -> set[str]:
    return {queue.name for queue in all_work_queues(len(get_settings().webhook_retry_ladder))}


def _checked(queue: str) -> str:
    known = _work_queue_names()
    if queue.removesuffix(".dead") not in known:
        raise typer.BadParameter(
            f"{queue!r} is not a work queue; one of {', '.join(sorted(known))}"
        )
    return queue.removesuffix(".dead")


QueueArgument = Annotated[str, typer.Argument(help="Work queue, e.g. processor.payout-commands")]


@dlq_app.command("list")
def list_command(
    queue: QueueArgument,
    limit: Annotated[int, typer.Option(min=1, help="At most this many")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
) -> None:
    """Show the dead letters of QUEUE (they stay in the dead-letter queue)."""
    letters = run_in_one_line(peek(get_settings().amqp_url, _checked(queue), limit))
    for letter in letters:
        if as_json:
            typer.echo(json.dumps(letter.__dict__))
        else:
            typer.echo(
                f"{letter.message_id}  payout={letter.payout_id}  attempts={letter.failed_attempts}"
                f"  correlation={letter.correlation_id}\n    {letter.reason}"
            )
    typer.echo(f"{len(letters)} dead letter(s) shown", err=True)


@dlq_app.command("redrive")
def redrive_command(
    queue: QueueArgument,
    limit: Annotated[int, typer.Option(min=1, help="At most this many")] = 1000,
) -> None:
    """Move the dead letters of QUEUE back to QUEUE, to be consumed again (up to --limit)."""
    work_queue = _checked(queue)
    redriven = run_in_one_line(redrive(get_settings().amqp_url, work_queue, limit))
    typer.echo(f"{redriven.moved} message(s) moved back to {work_queue}")
    if redriven.stopped_by is not None:
        with outages_in_one_line():  # why it stopped, in one line, and exit 1
            raise redriven.stopped_by
    if redriven.shared:
        typer.echo(
            f"{work_queue}.dead ran dry before its count: another client (a redrive, the "
            "Operations page, `payouts dlq list`) held some of its dead letters meanwhile",
            err=True,
        )
    if redriven.left:
        why = "another client held some meanwhile" if redriven.shared else f"--limit {limit}"
        typer.echo(f"{redriven.left} left in {work_queue}.dead ({why}): run this again", err=True)
