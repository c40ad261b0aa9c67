"""`payouts`: the operator CLI. Every service of the system starts from here."""

import contextlib
import json
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from cli import services
from cli.database import command_engine, in_turn
from cli.dlq import dlq_app
from cli.docs import docs_app
from cli.healthcheck import healthcheck_command
from cli.ids import ids_app
from cli.outages import outages_in_one_line, run_in_one_line
from cli.outbox import outbox_app
from cli.reconcile import reconcile_command
from cli.secrets import secrets_app
from cli.topology import topology_export_command
from cli.up import up
from cli.webhooks import webhook_sink_command, webhooks_app
from contracts.db.engine import committed, create_session_factory
from contracts.db.models import MERCHANT_NAME_LENGTH
from contracts.domain.money import InvalidAmount, parse_amount
from contracts.domain.text import text_problem, trimmed
from contracts.settings import MAX_API_WORKERS, ConfigurationError, Environment, get_settings
from contracts.webhooks import endpoint_url_problem

T = TypeVar("T")

app = typer.Typer(
    help="Payout sandbox: operator commands and services.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def read_settings() -> None:
    """Every command reads the PAYOUTS_* variables first: one that cannot be read is a line
    naming it and exit 2, not a traceback deep inside the command."""
    try:
        get_settings()
    except ConfigurationError as invalid:
        typer.echo(f"payouts: {invalid}", err=True)
        raise typer.Exit(2) from invalid


merchant_app = typer.Typer(help="Manage merchants.", no_args_is_help=True)
app.add_typer(merchant_app, name="merchant")
app.command("outbox-relay")(services.run_outbox_relay)
app.command("processor")(services.run_processor)
app.command("up")(up)
app.command("reconcile")(reconcile_command)
app.add_typer(dlq_app, name="dlq")
app.add_typer(docs_app, name="docs")
app.add_typer(outbox_app, name="outbox")
app.add_typer(secrets_app, name="secrets")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(ids_app, name="ids")
app.command("webhook-sink")(webhook_sink_command)
app.command("healthcheck")(healthcheck_command)
topology_app = typer.Typer(help="The RabbitMQ topology.", no_args_is_help=True)
app.add_typer(topology_app, name="topology")
topology_app.command("export")(topology_export_command)


def run_in_transaction(work: Callable[..., Awaitable[T]], *args: object, **kwargs: object) -> T:
    """Run `work(session, ...)` in one committed transaction. A database that does not answer is
    a one-line message and exit 1, not a traceback (cli.outages)."""
    return run_in_one_line(_in_one_transaction(None, work, *args, **kwargs))


def run_in_turn(lock: str, work: Callable[..., Awaitable[T]]) -> T:
    """`run_in_transaction`, one run of the command at a time on the database: another run
    started meanwhile waits for this one to commit (contracts.db.database_locks)."""
    return run_in_one_line(_in_one_transaction(lock, work))


async def _in_one_transaction(
    lock: str | None, work: Callable[..., Awaitable[T]], *args: object, **kwargs: object
) -> T:
    settings = get_settings()
    engine = command_engine(settings)
    try:
        async with contextlib.AsyncExitStack() as turn:
            if lock is not None:
                await turn.enter_async_context(in_turn(engine, settings, lock))
            # Not in `transaction`: a work that runs again after a deadlock rolls back and goes
            # on in the same session.
            return await committed(
                create_session_factory(engine), lambda session: work(session, *args, **kwargs)
            )
    finally:
        await engine.dispose()


def _amount(raw: str) -> Decimal:
    try:
        return parse_amount(raw, maximum=Decimal("1000000000000"))
    except InvalidAmount as exc:
        raise typer.BadParameter(f"amount {exc}") from exc


def _opening_balance(raw: str) -> Decimal:
    """Zero however it is written (0, 0.0, 00), else an amount."""
    with contextlib.suppress(InvalidOperation):
        if Decimal(raw.strip()) == 0:
            return Decimal("0")
    return _amount(raw)


def _merchant_name(name: str) -> str:
    name = trimmed(name)
    if not 1 <= len(name) <= MERCHANT_NAME_LENGTH:
        raise typer.BadParameter(f"must be 1 to {MERCHANT_NAME_LENGTH} characters")
    problem = text_problem(name)  # a surrogate too: a byte of the command line not UTF-8
    if problem is not None:
        raise typer.BadParameter(f"{problem} (or bytes not UTF-8)")
    return name


def _webhook_url(url: str | None) -> str | None:
    """As the API checks PUT /webhook-endpoint's URL (its syntax: where it resolves is checked
    at delivery)."""
    if url is not None and (problem := endpoint_url_problem(url)):
        raise typer.BadParameter(problem)
    return url


WebhookUrl = Annotated[str | None, typer.Option(help="Webhook endpoint URL", callback=_webhook_url)]


@app.command()
def migrate() -> None:
    """Apply every Alembic revision to PAYOUTS_DATABASE_URL."""
    from migrations.runner import NewerThanThisCode, upgrade_to_head

    settings = get_settings()
    services.refuse_to_start_unsafe("migrate", settings.require_own_service_passwords_in_production)
    services.refuse_to_start_unsafe("migrate", settings.require_own_secrets_key_in_production)
    with outages_in_one_line():
        try:
            upgrade_to_head(settings.database_url)
        except NewerThanThisCode as newer:
            typer.echo(
                f"the database is at revision {newer.revision}, which this code does not know "
                "(a newer code migrated it): nothing to migrate"
            )
            return
    typer.echo("database migrated")


@app.command()
def seed(
    webhook_url: WebhookUrl = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="PAYOUTS_DEMO_API_KEY",
            help="The demo merchant's API key (mpk_test_...); default: a new one, printed once",
        ),
    ] = None,
    webhook_secret: Annotated[
        str | None,
        typer.Option(
            envvar="PAYOUTS_DEMO_WEBHOOK_SECRET",
            help="The demo merchant's webhook secret (whsec_...); default: a new one",
        ),
    ] = None,
) -> None:
    """Create the demo merchant, or reuse it when it exists (safe to run on every start);
    `migrate` loads the directory. Prints {merchantId, created, apiKey}: apiKey is the key this
    run made, once (only its digest is stored), or null."""
    from cli.merchants import (
        ApiKeyTaken,
        DemoMerchant,
        check_demo_credentials,
        ensure_demo_merchant,
    )

    if get_settings().env is Environment.PRODUCTION:
        # docker-compose.yml runs the seed on every `up`: in production it made a merchant with a
        # test key and an opening balance out of nothing, its webhooks to the demo receiver.
        typer.echo("PAYOUTS_ENV=production: no demo merchant made (`payouts merchant create`)")
        return
    # An empty variable (compose's `${PAYOUTS_DEMO_API_KEY:-}`) means "not given".
    api_key, webhook_secret = api_key or None, webhook_secret or None
    try:
        check_demo_credentials(api_key, webhook_secret)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc

    async def work(session: AsyncSession) -> DemoMerchant:
        return await ensure_demo_merchant(
            session,
            balance=get_settings().demo_balance,
            webhook_url=webhook_url,
            api_key=api_key,
            webhook_secret=webhook_secret,
        )

    try:
        # In turn: two seeds at once (two `up`s of one compose project) each found no demo
        # merchant and each made one, with its own key and opening balance.
        demo = run_in_turn("payouts seed", work)
    except ApiKeyTaken as exc:
        raise typer.BadParameter(str(exc), param_hint="'--api-key'") from exc
    typer.echo(json.dumps(demo.as_json()))
    if api_key is not None:
        typer.echo("the demo merchant's API key is the one given (--api-key)", err=True)
    elif not demo.created:
        typer.echo(
            "the demo merchant exists and keeps its API key, printed when it was created (only "
            "its digest is stored); set PAYOUTS_DEMO_API_KEY to choose one",
            err=True,
        )


@merchant_app.command("create")
def merchant_create(
    name: Annotated[str, typer.Option(help="Merchant name", callback=_merchant_name)],
    balance: Annotated[str, typer.Option(help="Opening balance in PKR")] = "0",
    webhook_url: WebhookUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Create a merchant; prints its API key and webhook secret once."""
    from cli.merchants import create_merchant, is_the_demo_merchants_name

    if is_the_demo_merchants_name(name):  # the seed would take it for the demo merchant
        raise typer.BadParameter(
            "is the demo merchant's name, which `payouts seed` finds it by; choose another",
            param_hint="'--name'",
        )
    services.refuse_to_start_unsafe(
        "merchant create", get_settings().require_own_secrets_key_in_production
    )
    opening = _opening_balance(balance)
    created = run_in_transaction(
        create_merchant, name=name, balance=opening, webhook_url=webhook_url
    )
    if as_json:
        typer.echo(json.dumps(created.as_json()))
    else:
        typer.echo(f"merchant id:    {created.merchant_id}")
        typer.echo(f"API key:        {created.api_key}   (shown once)")
        typer.echo(f"webhook secret: {created.webhook_secret}")


def _idempotency_key(key: str | None) -> str | None:
    from api_service.idempotency import canonical_key, is_idempotency_key

    if key is None:
        return None
    if not is_idempotency_key(key):
        raise typer.BadParameter("must be a UUID")
    return canonical_key(key)


class TopUpNotMade(Enum):
    NO_MERCHANT = "no such merchant"
    MADE_ALREADY = "made under its key already"


# A negative amount is an argument to refuse, not an unknown option ("No such option: -5").
@merchant_app.command("topup", context_settings={"ignore_unknown_options": True})
def merchant_topup(
    merchant_id: str,
    amount: str,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            help="A UUID: run again with the same key (after a timeout, a dropped session), "
            "the top-up is made once",
            callback=_idempotency_key,
        ),
    ] = None,
) -> None:
    """Add funds: a TOPUP journal psp_settlement -> available; then the merchant's QUEUED
    payouts the available balance covers start, oldest first."""
    from api_service.idempotency import run_again_after_deadlocks
    from cli.merchants import KeyUsedForAnotherRequest, claim_top_up_key, merchant_exists
    from contracts.clock import MerchantTime
    from contracts.funding import TopUp, top_up_and_start_queued
    from contracts.ledger import TOP_UP_PAST_THE_LIMIT, BalanceLimitExceeded

    value = _amount(amount)
    settings = get_settings()
    ttl_seconds = settings.idempotency_ttl_seconds
    merchant_time = MerchantTime.of(settings)

    async def top_up(session: AsyncSession) -> TopUp | TopUpNotMade:
        if not await merchant_exists(session, merchant_id):
            return TopUpNotMade.NO_MERCHANT
        if idempotency_key is not None and not await claim_top_up_key(
            session, merchant_id, idempotency_key, value, ttl_seconds=ttl_seconds
        ):
            return TopUpNotMade.MADE_ALREADY
        return await top_up_and_start_queued(session, merchant_id, value, time=merchant_time)

    async def work(session: AsyncSession) -> TopUp | TopUpNotMade:
        # Copies run at once wait on the key; when the first rolls back, InnoDB may pick one
        # of them as a deadlock's victim, rolled back whole: it runs again.
        return await run_again_after_deadlocks(lambda: top_up(session), roll_back=session.rollback)

    try:
        done = run_in_transaction(work)
    except BalanceLimitExceeded as exc:
        raise typer.BadParameter(f"amount {TOP_UP_PAST_THE_LIMIT}") from exc
    except KeyUsedForAnotherRequest as exc:
        raise typer.BadParameter(
            "was used for another request of this merchant", param_hint="'--idempotency-key'"
        ) from exc
    if done is TopUpNotMade.NO_MERCHANT:
        _no_merchant(merchant_id)
    if done is TopUpNotMade.MADE_ALREADY:
        typer.echo(f"already topped up {value} PKR under this key: nothing done")
        return
    typer.echo(f"topped up {value} PKR")
    if done.started:
        typer.echo(f"started {len(done.started)} queued payouts")


@merchant_app.command("deactivate")
def merchant_deactivate(merchant_id: str) -> None:
    """Suspend a merchant: its API key refused, its dashboard sessions ended, its queued
    payouts kept from starting; what it has in flight goes on (outcomes, reversals, webhooks)."""
    from cli.merchants import deactivate_merchant

    if not run_in_transaction(deactivate_merchant, merchant_id):
        _no_merchant(merchant_id)
    typer.echo(f"merchant {merchant_id} deactivated: its queued payouts wait for its activation")


@merchant_app.command("activate")
def merchant_activate(merchant_id: str) -> None:
    """Let a deactivated merchant in again; its queued payouts the available balance covers
    start (after the expiries due by its clock)."""
    from cli.merchants import activate_merchant
    from contracts.clock import MerchantTime

    started = run_in_transaction(
        activate_merchant, merchant_id, time=MerchantTime.of(get_settings())
    )
    if started is None:
        _no_merchant(merchant_id)
    typer.echo(f"merchant {merchant_id} active")
    if started:
        typer.echo(f"started {len(started)} queued payouts")


def _no_merchant(merchant_id: str) -> NoReturn:
    typer.echo(f"no merchant {merchant_id}", err=True)
    raise typer.Exit(1)


# How long uvicorn's supervisor waits for a worker's answer to its ping before it kills the
# worker: its 5 s default killed workers of a host whose CPU others took (steal over 60 % here),
# and the API was ready only after about a minute and a half (containers review).
WORKER_PING_TIMEOUT_SECONDS = 30


@app.command()
def api(
    workers: Annotated[
        int | None, typer.Option(help="Uvicorn worker processes", min=1, max=MAX_API_WORKERS)
    ] = None,
) -> None:
    """Serve the REST API with uvicorn."""
    from api_service.metrics import shared_by_the_workers, start_over_with_an_empty_directory

    settings = get_settings()
    services.refuse_to_start_unsafe("api", settings.require_safe_for_production)
    start_over_with_an_empty_directory()
    services.configure_logging(settings)
    workers = settings.api_workers if workers is None else workers
    options: dict[str, Any] = {
        "host": settings.api_host,
        "port": settings.api_port,
        "workers": workers,
        "loop": "uvloop",
        "http": "api_service.http_protocol:HeadDeadlineProtocol",  # httptools, with a deadline
        "access_log": False,
        "proxy_headers": True,
        "forwarded_allow_ips": settings.forwarded_allow_ips,
        "timeout_graceful_shutdown": 15,
        "timeout_worker_healthcheck": WORKER_PING_TIMEOUT_SECONDS,
        "log_config": None,  # our JSON/text logging, not uvicorn's
    }
    # Each process that serves the app drains on SIGTERM (api_service/server.py).
    with shared_by_the_workers(workers):
        services.run_uvicorn("api_service.main:app", **options)


if __name__ == "__main__":
    app()
