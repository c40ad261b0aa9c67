"""`payouts up` (what `make run` runs, after migrating): create or reuse the demo merchant, start
every service in the foreground, give the demo merchant one payout per test scenario, print a
working API key, the dashboard's address and a curl to try; Ctrl-C stops them all cleanly."""

import json
import os
import secrets
import signal
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import typer
from sqlalchemy import update

from cli.database import command_engine
from cli.merchants import NewMerchant, as_stored_now, create_merchant
from cli.outages import run_in_one_line
from cli.supervisor import Service, ServiceGroup, StartupFailed, environment
from contracts.db.engine import create_session_factory, transaction
from contracts.db.models import Merchant
from contracts.domain.money import format_amount
from contracts.domain.scenarios import REVIEW_THRESHOLD, SUFFIX_RULES
from contracts.settings import Settings, get_settings

DEMO_MERCHANT_FILE = Path(".run/demo-merchant.json")
SINK_PORT = 9000
SERVICES = (
    Service("api", ("api",)),  # metrics at the API's own /metrics
    Service("outbox-relay", ("outbox-relay",), {"PAYOUTS_METRICS_PORT": "9102"}),
    Service("processor", ("processor",), {"PAYOUTS_METRICS_PORT": "9101"}),
    Service("webhooks", ("webhooks",), {"PAYOUTS_METRICS_PORT": "9103"}),
)
READY_TIMEOUT_SECONDS = 60.0


async def _demo_merchant(
    settings: Settings, saved: NewMerchant | None, webhook_url: str
) -> NewMerchant:
    """The demo merchant of earlier runs when it still exists with the key saved (its webhook
    secret read again: rotated from the dashboard, the saved one would fail every webhook at the
    sink once its grace ran out), else a new one, the only merchant sending to the sink."""
    engine = command_engine(settings)
    try:
        async with transaction(create_session_factory(engine)) as session:
            current = None if saved is None else await as_stored_now(session, saved)
            if current is not None:
                await session.execute(
                    update(Merchant)
                    .where(Merchant.id == current.merchant_id)
                    .values(webhook_url=webhook_url)
                )
                return current
            made = await create_merchant(
                session,
                name="Demo Merchant",
                balance=settings.demo_balance,
                webhook_url=webhook_url,
            )
            # The sink checks signatures with the new merchant's secret alone: another merchant
            # sending there (the one replaced) had each webhook refused, retried for a day
            # (newcomer review).
            await session.execute(
                update(Merchant)
                .where(Merchant.webhook_url == webhook_url, Merchant.id != made.merchant_id)
                .values(webhook_url=None)
            )
            return made
    finally:
        await engine.dispose()


def _load_saved_merchant() -> NewMerchant | None:
    """The demo merchant an earlier run saved; None when there is none, or the file is not one
    (cut short, or of another version: a new demo merchant is made, rather than a traceback)."""
    if not DEMO_MERCHANT_FILE.exists():
        return None
    try:
        return NewMerchant(**json.loads(DEMO_MERCHANT_FILE.read_text()))
    except (ValueError, TypeError):
        typer.echo(f"{DEMO_MERCHANT_FILE} is not a saved merchant: making a new one", err=True)
        return None


def _save_merchant(merchant: NewMerchant) -> None:
    """Local development only: the plain key stays on this machine, readable by its owner from
    the file's creation on (written, then narrowed, it was readable by anyone for a moment)."""
    DEMO_MERCHANT_FILE.parent.mkdir(exist_ok=True)
    descriptor = os.open(DEMO_MERCHANT_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # a file an earlier version left readable
    with os.fdopen(descriptor, "w") as file:
        file.write(json.dumps(merchant.__dict__))


def demo_payouts() -> list[dict[str, Any]]:
    """One payout per test scenario (and one for review), with fixed references: a later
    `make run` sends them again and the batch answers `duplicate`, creating nothing."""
    payouts: list[dict[str, Any]] = [
        {
            "merchantReference": f"demo-account-{suffix}",
            "amount": "1500.00",
            "destType": "WALLET",
            "walletCode": "JAZZCASH",
            "accountNumber": f"0300123{suffix}",
            "accountTitle": "Ayesha Khan",
            "purpose": f"Demo: an account ending {suffix}",
        }
        for suffix in SUFFIX_RULES
    ]
    payouts.append(
        {
            "merchantReference": "demo-in-review",
            "amount": format_amount(REVIEW_THRESHOLD * 2),
            "destType": "BANK",
            "bankCode": "HBL",
            "accountNumber": "123456781234",
            "accountTitle": "Muhammad Ali",
            "purpose": "Demo: an amount that waits for review",
        }
    )
    return payouts


def _create_demo_payouts(base_url: str, merchant: NewMerchant) -> str:
    """Through the API, like any merchant (POST /payouts/batch): what became of them."""
    try:
        response = httpx.post(
            f"{base_url}/api/v1/payouts/batch",
            json={"payouts": demo_payouts()},
            headers={"X-API-KEY": merchant.api_key, "X-IDEMPOTENCY-KEY": str(uuid.uuid4())},
            timeout=30,
        )
        response.raise_for_status()
        summary = response.json()["data"]["summary"]
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        return f"not created ({type(exc).__name__}: {exc})"
    return (
        f"one per original test scenario (0001-0005) and one in review, references demo-... "
        f"({summary['created']} created now, "
        f"{summary['duplicate']} from an earlier run)"
    )


def _banner(base_url: str, merchant: NewMerchant, operator_token: str, demo: str) -> str:
    body = (
        '{"merchantReference":"demo-\'$(date +%s)\'","amount":"1500.00","destType":"WALLET",'
        '"walletCode":"JAZZCASH","accountNumber":"03001230001"}'
    )
    return f"""
Payout sandbox is running.
  Dashboard:      {base_url}/dashboard   (sign in with the demo API key below)
  Operations:     {base_url}/dashboard/operations   (operator token: {operator_token})
  API:            {base_url}/api/v1   (docs: {base_url}/docs)
  RabbitMQ UI:    http://127.0.0.1:15672  (guest/guest)
  Metrics:        {base_url}/metrics, :9101/metrics (processor), :9102/metrics (relay),
                  :9103/metrics (webhooks)
  Demo API key:   {merchant.api_key}
  Webhook secret: {merchant.webhook_secret}
  Webhooks:       delivered to the local sink at http://127.0.0.1:{SINK_PORT}/webhooks, which
                  verifies each signature and prints the event in this terminal
  Demo payouts:   {demo}

Try:
  curl -s -X POST {base_url}/api/v1/payouts \\
    -H 'X-API-KEY: {merchant.api_key}' \\
    -H "X-IDEMPOTENCY-KEY: $(cat /proc/sys/kernel/random/uuid)" \\
    -H 'Content-Type: application/json' \\
    -d '{body}'

Ctrl-C stops every service.
"""


def api_base_url(host: str, port: int) -> str:
    """The API's address as a URL: an IPv6 host in brackets (`http://:::8000` was a traceback)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def refuse_a_taken_port(host: str, port: int) -> None:
    """SystemExit when something listens on the API's port already (a `make run` killed with
    SIGKILL, whose API serves on): its /ready answered 200, and this run announced a sandbox
    whose token and key were not the server's on that port."""
    family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as taken:
            raise SystemExit(
                f"port {port} on {host} is in use ({taken.strerror}): is another `make run` "
                "still running? Stop it, or set PAYOUTS_API_PORT"
            ) from taken


def stop_on_signals() -> None:
    """SIGTERM stops all, like Ctrl-C, and so does the terminal closing (SIGHUP): the services,
    in sessions of their own, hear neither. Not a SIGHUP ignored already: `nohup make run &`
    was stopped by the terminal closing all the same."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signal.signal(signal.SIGHUP, signal.default_int_handler)


def up() -> None:
    """Start the whole system in the foreground: API, relay, processor, webhooks, a sink."""
    settings = get_settings()
    base_url = api_base_url(settings.api_host, settings.api_port)
    refuse_a_taken_port(settings.api_host, settings.api_port)
    webhook_url = f"http://127.0.0.1:{SINK_PORT}/webhooks"
    merchant = run_in_one_line(_demo_merchant(settings, _load_saved_merchant(), webhook_url))
    _save_merchant(merchant)
    # The dashboard's operations pages need a token: a fresh one per run unless one is set.
    operator_token = settings.operator_token or secrets.token_urlsafe(16)
    group = ServiceGroup(
        env=environment(
            PAYOUTS_WEBHOOK_ALLOW_PRIVATE_URLS="true",  # the sink listens on localhost
            PAYOUTS_LOG_FORMAT=os.environ.get("PAYOUTS_LOG_FORMAT", "text"),  # a terminal
            PAYOUTS_OPERATOR_TOKEN=operator_token,
        )
    )
    stop_on_signals()
    sink = Service(
        "webhook-sink",
        ("webhook-sink", "--port", str(SINK_PORT)),
        {"PAYOUTS_WEBHOOK_SINK_SECRET": merchant.webhook_secret},
    )
    try:
        for service in (*SERVICES, sink):
            group.start(service)
        try:
            group.wait_until_ready(base_url, within=READY_TIMEOUT_SECONDS)
        except StartupFailed as failure:
            raise SystemExit(str(failure)) from failure
        demo = _create_demo_payouts(base_url, merchant)
        typer.echo(_banner(base_url, merchant, operator_token, demo))
        while not group.exited():
            time.sleep(0.5)
        typer.echo(f"a service exited: {group.exited()}; stopping the others", err=True)
        raise typer.Exit(1)  # a crash is not a clean run (the others are stopped on the way)
    except KeyboardInterrupt:
        typer.echo("\nstopping...")
    finally:
        group.stop()
