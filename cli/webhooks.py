"""`payouts webhooks` (the delivery service, `replay-parked`) and `payouts webhook-sink` (a
local receiver that verifies and prints what the service sends)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
import typer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from cli.database import command_engine, in_turn
from cli.outages import run_in_one_line
from cli.services import configure_logging, refuse_to_start_unsafe, serve_app
from contracts.db.engine import create_session_factory
from contracts.db.models import Merchant
from contracts.domain.text import on_one_line
from contracts.heartbeat import BeatWhileWorking, Heartbeat
from contracts.settings import get_settings
from contracts.webhooks import resend_routing_key

webhooks_app = typer.Typer(
    help="Webhook delivery: run the service (no subcommand) or replay parked messages.",
    invoke_without_command=True,
)


@webhooks_app.callback()
def run_webhook_service(ctx: typer.Context) -> None:
    """Without a subcommand: run the webhook service until SIGINT/SIGTERM (graceful)."""
    if ctx.invoked_subcommand is not None:
        return
    from webhook_service.app import create_webhook_app

    settings = get_settings()
    refuse_to_start_unsafe("webhooks", settings.require_safe_webhooks_in_production)
    configure_logging(settings)
    serve_app(create_webhook_app(settings))


@webhooks_app.command("replay-parked")
def replay_parked_command(
    merchant: Annotated[
        str | None, typer.Option("--merchant", help="Only this merchant's parked messages")
    ] = None,
) -> None:
    """Move parked webhook messages back to the delivery queue; their deliveries go PENDING."""
    from webhook_service.parking_lot import ReplayResult, replay_parked

    settings = get_settings()

    async def replay() -> ReplayResult:
        """One replay at a time: a replay of one merchant holds the other merchants' messages
        unacked while it runs, and a replay of all beside it ended early, leaving them parked and
        saying nothing of them (two operators review)."""
        engine = command_engine(settings)
        try:
            async with in_turn(engine, settings, "payouts webhooks replay-parked"):
                sessions = create_session_factory(engine)
                return await replay_parked(settings.amqp_url, sessions, merchant_id=merchant)
        finally:
            await engine.dispose()

    result = run_in_one_line(replay())
    lanes = " and ".join(resend_routing_key(in_bulk=in_bulk) for in_bulk in (False, True))
    typer.echo(f"moved {result.moved} parked webhook message(s) back to {lanes}")
    if result.dropped:
        typer.echo(f"dropped {result.dropped}: copies of an event moved, or delivered already")
    if result.kept:
        typer.echo(f"{result.kept} message(s) of other merchants left parked")
    if result.still_parked:
        typer.echo(
            f"{result.still_parked} deliveries still PARKED: no message of theirs was in the "
            "parking lot (no webhook URL when they were due, or secrets the webhook service could "
            "not open; or one was parked while this ran): their merchant resends them once that "
            "is fixed (the dashboard's webhook deliveries, or "
            "POST /api/v1/webhooks/deliveries/{id}/resend)"
        )


def sink_line(body: bytes, webhook_id: str | None, verdict: str) -> str:
    """One line per event: when, which event, which payout, its status at the event. On one line
    whatever the body holds: unverified, it is anyone's, and its escape sequences would reach the
    operator's terminal (taint review)."""
    try:
        event: dict[str, Any] = orjson.loads(body)
        payout = event.get("payout") or {}
        line = (
            f"{event.get('createdAt')} {event.get('id')} {event.get('type')} "
            f"payout={payout.get('id')} status={payout.get('status')} "
            f"amount={payout.get('amount')} [{verdict}]"
        )
    except (orjson.JSONDecodeError, AttributeError):
        line = f"{webhook_id} non-JSON body of {len(body)} bytes [{verdict}]"
    return on_one_line(line)


def build_sink(secret: str | None, heartbeat: Heartbeat | None = None) -> Starlette:
    """Answers 204 to a verified (or, without a secret, any) POST; 401 to a bad signature.
    Touches `heartbeat` while it serves."""
    verifier = None
    if secret:
        # A dev dependency: only needed (and imported) when the sink verifies signatures.
        from standardwebhooks.webhooks import Webhook

        verifier = Webhook(secret)

    async def receive(request: Request) -> Response:
        body = await request.body()
        webhook_id = request.headers.get("webhook-id")
        verdict = "unverified: no --secret"
        if verifier is not None:
            from standardwebhooks.webhooks import WebhookVerificationError

            try:
                verifier.verify(body, dict(request.headers), json_parse=False)
            except WebhookVerificationError as exc:
                typer.echo(f"REJECTED {webhook_id}: {exc}", err=True)
                return PlainTextResponse("invalid signature", status_code=401)
            verdict = "signature ok"
        typer.echo(sink_line(body, webhook_id, verdict))
        return Response(status_code=204)

    async def serving() -> bool:
        return True  # the lifespan's task runs: uvicorn serves (a port it cannot bind stops it)

    beating = BeatWhileWorking(heartbeat or Heartbeat(None), serving)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await beating.clear()
        await beating.start()
        try:
            yield
        finally:
            await beating.stop()

    return Starlette(routes=[Route("/{path:path}", receive, methods=["POST"])], lifespan=lifespan)


async def webhook_secret_of_merchant_at(session: AsyncSession, webhook_url: str) -> str | None:
    """The webhook secret of the newest merchant whose webhooks go to `webhook_url`, if any."""
    return await session.scalar(
        select(Merchant.webhook_secret)
        .where(Merchant.webhook_url == webhook_url)
        .order_by(Merchant.created_at.desc(), Merchant.id)
        .limit(1)
    )


def webhook_sink_command(
    # Past 65535 the sink said it listened on the port given, and listened on it modulo 65536.
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on")] = 9000,
    secret: Annotated[
        str | None,
        typer.Option(
            help="The merchant's whsec_ secret: verify every signature with standardwebhooks",
            envvar="PAYOUTS_WEBHOOK_SINK_SECRET",
        ),
    ] = None,
    secret_of_merchant_at: Annotated[
        str | None,
        typer.Option(
            help="Without --secret: verify with the secret of the merchant whose webhook URL "
            "this is, read from the database as the sink starts (docker-compose.yml's demo)",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0 in a container)")] = (
        "127.0.0.1"
    ),
) -> None:
    """A local webhook receiver: verifies each request and prints each event on one line."""
    from cli.main import run_in_transaction  # the entry point, loaded already
    from cli.merchants import check_webhook_secret
    from cli.services import run_uvicorn

    refuse_to_start_unsafe(
        "webhook-sink", get_settings().require_own_service_passwords_in_production
    )
    if not secret and secret_of_merchant_at:
        # Compose's demo: the seed made the merchant and its secret (a plain `up` sets none).
        secret = run_in_transaction(webhook_secret_of_merchant_at, secret_of_merchant_at)
        if secret is None:
            typer.echo(f"no merchant's webhooks go to {secret_of_merchant_at}: not verifying")
    if secret:  # a secret cut short was a standardwebhooks traceback
        try:
            check_webhook_secret(secret)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="'--secret'") from exc

    typer.echo(f"listening on http://{host}:{port}/ (any path)")
    sink = build_sink(secret, Heartbeat.at(get_settings().heartbeat_file))
    run_uvicorn(sink, host=host, port=port, access_log=False)
