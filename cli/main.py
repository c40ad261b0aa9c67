"""`payouts`: the operator CLI. Every service of the system starts from here."""

import asyncio
import json
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from cli import services
from cli.dlq import dlq_app
from cli.docs import docs_app
from cli.outbox import outbox_app
from cli.reconcile import reconcile_command
from cli.topology import topology_export_command
from cli.up import up
from cli.webhooks import webhook_sink_command, webhooks_app
from contracts.db.engine import create_engine, create_session_factory, transaction
from contracts.domain.money import InvalidAmount, parse_amount
from contracts.settings import InsecureConfiguration, get_settings

T = TypeVar("T")

app = typer.Typer(
    help="Payout sandbox: operator commands and services.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
merchant_app = typer.Typer(help="Manage merchants.", no_args_is_help=True)
app.add_typer(merchant_app, name="merchant")
app.command("outbox-relay")(services.run_outbox_relay)
app.command("processor")(services.run_processor)
app.command("up")(up)
app.command("reconcile")(reconcile_command)
app.add_typer(dlq_app, name="dlq")
app.add_typer(docs_app, name="docs")
app.add_typer(outbox_app, name="outbox")
app.add_typer(webhooks_app, name="webhooks")
app.command("webhook-sink")(webhook_sink_command)
topology_app = typer.Typer(help="The RabbitMQ topology.", no_args_is_help=True)
app.add_typer(topology_app, name="topology")
topology_app.command("export")(topology_export_command)


def run_in_transaction(work: Callable[..., Awaitable[T]], *args: object, **kwargs: object) -> T:
    """Run `work(session, ...)` in one committed transaction."""

    async def _run() -> T:
        engine = create_engine(get_settings().database_url, pool_size=1)
        try:
            async with transaction(create_session_factory(engine)) as session:
                return await work(session, *args, **kwargs)
        finally:
            await engine.dispose()

    return asyncio.run(_run())


def _amount(raw: str) -> Decimal:
    try:
        return parse_amount(raw, maximum=Decimal("1000000000000"))
    except InvalidAmount as exc:
        raise typer.BadParameter(f"amount {exc}") from exc


@app.command()
def migrate() -> None:
    """Apply every Alembic revision to PAYOUTS_DATABASE_URL."""
    from migrations.runner import upgrade_to_head

    upgrade_to_head(get_settings().database_url)
    typer.echo("database migrated")


@app.command()
def seed(
    webhook_url: Annotated[str | None, typer.Option(help="Demo merchant's webhook URL")] = None,
) -> None:
    """Create one demo merchant (its key is printed once); `migrate` loads the directory."""
    from cli.merchants import NewMerchant, create_merchant

    async def work(session: AsyncSession) -> NewMerchant:
        return await create_merchant(
            session,
            name="Demo Merchant",
            balance=get_settings().demo_balance,
            webhook_url=webhook_url,
        )

    typer.echo(json.dumps(run_in_transaction(work).as_json()))


@merchant_app.command("create")
def merchant_create(
    name: Annotated[str, typer.Option(help="Merchant name")],
    balance: Annotated[str, typer.Option(help="Opening balance in PKR")] = "0",
    webhook_url: Annotated[str | None, typer.Option(help="Webhook endpoint URL")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Create a merchant; prints its API key and webhook secret once."""
    from cli.merchants import create_merchant

    opening = Decimal("0") if balance.strip() in ("0", "0.00") else _amount(balance)
    created = run_in_transaction(
        create_merchant, name=name, balance=opening, webhook_url=webhook_url
    )
    if as_json:
        typer.echo(json.dumps(created.as_json()))
    else:
        typer.echo(f"merchant id:    {created.merchant_id}")
        typer.echo(f"API key:        {created.api_key}   (shown once)")
        typer.echo(f"webhook secret: {created.webhook_secret}")


@merchant_app.command("topup")
def merchant_topup(merchant_id: str, amount: str) -> None:
    """Add funds: a TOPUP journal psp_settlement -> available."""
    from cli.merchants import merchant_exists
    from contracts import ledger

    value = _amount(amount)

    async def work(session: AsyncSession) -> bool:
        if not await merchant_exists(session, merchant_id):
            return False
        await ledger.top_up(session, merchant_id=merchant_id, amount=value)
        return True

    if not run_in_transaction(work):
        typer.echo(f"no merchant {merchant_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"topped up {value} PKR")


@app.command()
def api(
    workers: Annotated[int | None, typer.Option(help="Uvicorn worker processes")] = None,
) -> None:
    """Serve the REST API with uvicorn."""
    import uvicorn

    settings = get_settings()
    try:
        settings.require_safe_for_production()
    except InsecureConfiguration as refused:
        typer.echo(f"payouts api: {refused}", err=True)
        raise typer.Exit(2) from refused
    services.configure_logging(settings)
    options: dict[str, Any] = {
        "host": settings.api_host,
        "port": settings.api_port,
        "workers": workers or settings.api_workers,
        "loop": "uvloop",
        "http": "httptools",
        "access_log": False,
        "timeout_graceful_shutdown": 15,
        "log_config": None,  # our JSON/text logging, not uvicorn's
    }
    if options["workers"] > 1:  # uvicorn's supervisor runs plain servers in its workers
        uvicorn.run("api_service.main:app", **options)
        return
    from api_service.server import DrainingServer

    config = uvicorn.Config("api_service.main:app", **options)
    DrainingServer(config, drain_seconds=settings.shutdown_drain_seconds).run()


if __name__ == "__main__":
    app()
