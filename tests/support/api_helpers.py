"""Helpers for the REST API tests: headers, payout bodies, error assertions, and what a merchant's
requests left in the database (to prove that a rejected request wrote nothing)."""

import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import orjson
from prometheus_client import REGISTRY
from sqlalchemy import func, select, update

from cli.merchants import NewMerchant, create_merchant
from contracts import ledger
from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.db.models import (
    LedgerJournal,
    LedgerLine,
    OutboxMessage,
    Payout,
    PayoutEvent,
    PspCallback,
)
from contracts.domain.statuses import EventType, PayoutStatus
from contracts.messages import ProcessPayout
from contracts.payout_events import new_event_id
from contracts.topology import (
    APPLY_PSP_OUTCOME_KEY,
    MERCHANT_ID_HEADER,
    PAYOUT_ID_HEADER,
    PROCESS_PAYOUT_KEY,
    PROCESS_PAYOUTS_IN_BULK_KEY,
)

API = "/api/v1"
# The routing keys of a payout's ProcessPayout commands: one payout started alone, or several at
# once (contracts/payout_events.py); and of its ApplyPspOutcome commands.
PROCESSING_KEYS = frozenset({PROCESS_PAYOUT_KEY, PROCESS_PAYOUTS_IN_BULK_KEY})
OUTCOME_KEYS = frozenset({APPLY_PSP_OUTCOME_KEY})
MONEY = re.compile(r"^\d+\.\d{2}$")
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
GENERATED_REQUEST_ID = re.compile(r"^req_[0-9a-f]{32}$")


async def new_merchant(sessions: SessionFactory, balance: str = "1000000.00") -> NewMerchant:
    """For module-scoped fixtures, where the function-scoped `make_merchant` is not available."""
    async with transaction(sessions) as session:
        return await create_merchant(
            session, name="API test", balance=Decimal(balance), webhook_url=None
        )


def new_key() -> str:
    return str(uuid.uuid4())


def auth(merchant: NewMerchant, idempotency_key: str | None = None) -> dict[str, str]:
    """X-API-KEY, plus a fresh X-IDEMPOTENCY-KEY unless one is given ("" sends none)."""
    headers = {"X-API-KEY": merchant.api_key}
    key = new_key() if idempotency_key is None else idempotency_key
    if key:
        headers["X-IDEMPOTENCY-KEY"] = key
    return headers


def payout_body(**overrides: Any) -> dict[str, Any]:
    """A valid wallet payout of 100.00 with a unique reference; `None` drops a field."""
    body: dict[str, Any] = {
        "merchantReference": f"ref-{uuid.uuid4().hex[:12]}",
        "amount": "100.00",
        "destType": "WALLET",
        "walletCode": "JAZZCASH",
        "accountNumber": "03001234567",
    }
    body.update(overrides)
    return {name: value for name, value in body.items() if value is not None}


def bank_payout_body(account_number: str, **overrides: Any) -> dict[str, Any]:
    """payout_body to an HBL account: the scenario rules look only at the amount and the
    account's last digits."""
    return payout_body(
        destType="BANK",
        bankCode="HBL",
        walletCode=None,
        accountNumber=account_number,
        **overrides,
    )


async def create_payout(
    client: httpx.AsyncClient, merchant: NewMerchant, **overrides: Any
) -> dict[str, Any]:
    response = await client.post(
        f"{API}/payouts", json=payout_body(**overrides), headers=auth(merchant)
    )
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def get_balance(client: httpx.AsyncClient, merchant: NewMerchant) -> dict[str, Any]:
    response = await client.get(f"{API}/balance", headers=auth(merchant, ""))
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def assert_error(
    response: httpx.Response, status: int, code: str, field: str | None = None
) -> dict[str, Any]:
    """The contract's error envelope with this status and code (and `details` naming `field`)."""
    assert response.status_code == status, response.text
    envelope = response.json()
    assert envelope["success"] is False
    error: dict[str, Any] = envelope["error"]
    assert error["code"] == code, error
    assert error["requestId"] == response.headers["x-request-id"]
    assert TIMESTAMP.fullmatch(error["timestamp"]), error["timestamp"]
    if field is not None:
        assert field in [detail["field"] for detail in error["details"]], error
    return error


def psp_headers(secret: str, body: bytes) -> dict[str, str]:
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-PSP-Signature": signature, "Content-Type": "application/json"}


async def send_ipn(
    client: httpx.AsyncClient,
    psp_secret: str,
    payout_id: str,
    status: str,
    event_id: str | None = None,
    **fields: str,
) -> httpx.Response:
    """A PSP callback of these fields, signed (post_ipn)."""
    body = orjson.dumps(
        {
            "eventId": event_id or f"evt-{uuid.uuid4().hex}",
            "payoutId": payout_id,
            "status": status,
            **fields,
        }
    )
    return await post_ipn(client, psp_secret, body)


async def post_ipn(client: httpx.AsyncClient, psp_secret: str, body: bytes) -> httpx.Response:
    """A raw callback body, signed as the PSP signs it: hex HMAC-SHA256 of the raw body."""
    return await client.post(f"{API}/ipn/psp", content=body, headers=psp_headers(psp_secret, body))


@dataclass(frozen=True)
class Footprint:
    """Row counts a merchant's requests produced, table by table."""

    payouts: int
    journals: int
    lines: int
    outbox: int
    events: int
    callbacks: int


async def footprint(sessions: SessionFactory, merchant_id: str) -> Footprint:
    async with sessions() as session:

        async def count(statement: Any) -> int:
            return int(await session.scalar(statement) or 0)

        outbox_merchant = OutboxMessage.headers[MERCHANT_ID_HEADER].as_string()
        return Footprint(
            payouts=await count(
                select(func.count()).select_from(Payout).where(Payout.merchant_id == merchant_id)
            ),
            journals=await count(
                select(func.count())
                .select_from(LedgerJournal)
                .where(LedgerJournal.merchant_id == merchant_id)
            ),
            lines=await count(
                select(func.count())
                .select_from(LedgerLine)
                .where(LedgerLine.merchant_id == merchant_id)
            ),
            outbox=await count(
                select(func.count())
                .select_from(OutboxMessage)
                .where(outbox_merchant == merchant_id)
            ),
            events=await count(
                select(func.count())
                .select_from(PayoutEvent)
                .where(PayoutEvent.merchant_id == merchant_id)
            ),
            callbacks=await count(
                select(func.count())
                .select_from(PspCallback)
                .join(Payout, Payout.id == PspCallback.payout_id)
                .where(Payout.merchant_id == merchant_id)
            ),
        )


async def new_payout_command(
    client: httpx.AsyncClient, sessions: SessionFactory, merchant: NewMerchant, **overrides: Any
) -> ProcessPayout:
    """A new payout's ProcessPayout command, as its create wrote it to the outbox (for tests in
    which no relay runs: they hand it to the processor's handlers)."""
    created = await create_payout(client, merchant, **overrides)
    [command] = [
        ProcessPayout.model_validate_json(row.body)
        for row in await outbox_for_payout(sessions, created["id"])
        if row.routing_key == PROCESS_PAYOUT_KEY
    ]
    return command


async def outbox_for_payout(sessions: SessionFactory, payout_id: str) -> list[OutboxMessage]:
    async with sessions() as session:
        rows = await session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.headers[PAYOUT_ID_HEADER].as_string() == payout_id)
            .order_by(OutboxMessage.id)
        )
        return list(rows)


# What the processor's ledger does on the way to each status, from a held (non-terminal) payout.
_POSTINGS_TO = {
    PayoutStatus.SUCCESS: (ledger.PAYOUT,),
    PayoutStatus.FAILED: (ledger.RELEASE,),
    PayoutStatus.REVERSED: (ledger.PAYOUT, ledger.REVERSAL),
}


async def move_payout(sessions: SessionFactory, payout_id: str, status: PayoutStatus) -> None:
    """Put a held payout into `status` as the processor would: the ledger postings of that
    status and the status update in one transaction, so the ledger stays reconciled."""
    async with transaction(sessions) as session:
        payout = await session.scalar(
            select(Payout).where(Payout.id == payout_id).with_for_update()
        )
        assert payout is not None
        for posting in _POSTINGS_TO.get(status, ()):
            await ledger.post(
                session,
                posting,
                merchant_id=payout.merchant_id,
                payout_id=payout.id,
                hold_cycle=payout.hold_cycle,
                amount=payout.amount,
            )
        failed = status is PayoutStatus.FAILED
        await session.execute(
            update(Payout)
            .where(Payout.id == payout_id)
            .values(
                status=status.value,
                failure_code="ACCOUNT_INVALID" if failed else None,
                failure_reason="Account validation failed" if failed else None,
                updated_at=utcnow(),
            )
        )


async def process_payout(sessions: SessionFactory, payout_id: str, status: PayoutStatus) -> None:
    """move_payout, after the payout.processing event the processor writes as it takes a payout:
    what tells the readiness report that the payout's scenario ran."""
    async with transaction(sessions) as session:
        merchant_id = await session.scalar(select(Payout.merchant_id).where(Payout.id == payout_id))
        assert merchant_id is not None
        session.add(
            PayoutEvent(
                id=new_event_id(),
                merchant_id=merchant_id,
                payout_id=payout_id,
                type=EventType.PROCESSING.value,
                body=b"{}",
                created_at=utcnow(),
            )
        )
    await move_payout(sessions, payout_id, status)


async def fail_payout(sessions: SessionFactory, payout_id: str) -> None:
    """FAILED with the hold released (the processor that normally does it is not running)."""
    await move_payout(sessions, payout_id, PayoutStatus.FAILED)


async def create_failed_payout(
    client: httpx.AsyncClient, merchant: NewMerchant, sessions: SessionFactory
) -> dict[str, Any]:
    """A payout created, then FAILED with its hold released (fail_payout): as created."""
    payout = await create_payout(client, merchant)
    await fail_payout(sessions, payout["id"])
    return payout


def database_refusals(reason: str) -> float:
    """This process's API calls answered 503 for the database's state, for `reason`."""
    sample = REGISTRY.get_sample_value("payouts_api_database_refusals_total", {"reason": reason})
    return sample or 0.0
