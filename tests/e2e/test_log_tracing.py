"""Can an operator follow one payout through the services' JSON logs? The system runs as processes
(JSON lines, DEBUG) and is driven once for the whole module (`trail`): payouts of the 0001-0004
scenarios, an idempotent create sent twice, an IPN, a payroll, and copies of a command that the
processor runs together in one batch. Each test then reads the lines."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory
from contracts.db.models import OutboxMessage
from contracts.settings import Settings
from contracts.topology import PAYOUT_ID_HEADER
from tests.support.amqp import open_rabbit
from tests.support.api_helpers import (
    PROCESSING_KEYS,
    auth,
    new_key,
    new_merchant,
    send_ipn,
)
from tests.support.polling import eventually
from tests.support.scenarios import SCENARIOS
from tests.support.system import RunningSystem, running_system

Line = dict[str, Any]
COPIES = 4
PAYROLL = 3


@pytest.fixture(scope="module")
def system(
    service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningSystem]:
    # DEBUG: every step of a payout; a batch window long enough that copies of a command
    # published together are processed together.
    env = {
        **service_env,
        "PAYOUTS_LOG_FORMAT": "json",
        "PAYOUTS_LOG_LEVEL": "DEBUG",
        "PAYOUTS_PROCESSOR_BATCH_WINDOW_SECONDS": "0.2",
    }
    with running_system(env, tmp_path_factory.mktemp("log-tracing")) as running:
        yield running


@dataclass
class Trail:
    system: RunningSystem
    merchant: NewMerchant
    payout_of: dict[str, str] = field(default_factory=dict)  # scenario prefix -> payout id
    replayed: str = ""  # the payout of a create sent twice under one idempotency key
    ipn_payout: str = ""
    payroll_payouts: list[str] = field(default_factory=list)
    copied: str = ""  # the payout whose command was published again, in copies

    def lines(self, service: str) -> list[Line]:
        text = (self.system.log_dir / f"{service}.log").read_text()
        return [json.loads(raw) for raw in text.splitlines() if raw.startswith("{")]

    def of_payout(self, service: str, payout_id: str) -> list[Line]:
        return [e for e in self.lines(service) if e.get("payout_id") == payout_id]


def show(lines: list[Line]) -> str:
    return "\n".join(json.dumps(e) for e in lines)


async def _create(
    http: httpx.AsyncClient, merchant: NewMerchant, body: dict[str, Any], key: str | None = None
) -> str:
    response = await http.post("/payouts", json=body, headers=auth(merchant, key))
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


async def _status(http: httpx.AsyncClient, merchant: NewMerchant, payout_id: str) -> str:
    response = await http.get(f"/payouts/{payout_id}", headers=auth(merchant, ""))
    return str(response.json()["data"]["status"])


@pytest.fixture(scope="module")
async def trail(
    system: RunningSystem, settings: Settings, sessions: SessionFactory
) -> AsyncIterator[Trail]:
    merchant = await new_merchant(sessions)
    t = Trail(system, merchant)
    async with httpx.AsyncClient(base_url=f"{system.base_url}/api/v1", timeout=30) as http:
        scenarios = [s for s in SCENARIOS if s.name[:4] in ("0001", "0002", "0003", "0004")]
        created = await asyncio.gather(
            *(_create(http, merchant, s.request_body()) for s in scenarios)
        )
        t.payout_of = {s.name[:4]: p for s, p in zip(scenarios, created, strict=True)}

        # one create, sent twice under one key: the second answer is the first, replayed
        key, body = new_key(), SCENARIOS[0].request_body()
        t.replayed = await _create(http, merchant, body, key)
        assert await _create(http, merchant, body, key) == t.replayed

        t.payroll_payouts = [
            r["payout"]["id"]
            for r in (
                await http.post(
                    "/payouts/batch",
                    json={"payouts": [SCENARIOS[0].request_body() for _ in range(PAYROLL)]},
                    headers=auth(merchant),
                )
            ).json()["data"]["results"]
        ]

        async def pending_at_the_psp() -> bool:
            return await _psp_reference(http, merchant, t.payout_of["0004"])

        await eventually(pending_at_the_psp, within=15, interval=0.1, what="0004 at the PSP")
        t.ipn_payout = t.payout_of["0004"]
        async with httpx.AsyncClient(base_url=system.base_url, timeout=30) as raw:
            ipn = await send_ipn(raw, settings.psp_secret, t.ipn_payout, "SUCCESS")
        assert ipn.status_code == 200, ipn.text

        # copies of 0001's command, published at once: processed together, in one batch
        t.copied = t.payout_of["0001"]
        await eventually(lambda: _is(http, merchant, t.copied, "SUCCESS"), within=15, interval=0.1)
        async with sessions() as session:
            rows = list(await session.scalars(select(OutboxMessage)))
        [row] = [
            r
            for r in rows
            if r.routing_key in PROCESSING_KEYS
            and (r.headers or {}).get(PAYOUT_ID_HEADER) == t.copied
        ]
        async with open_rabbit(settings.amqp_url) as rabbit:
            for _ in range(COPIES):
                await rabbit.publish(
                    row.body,
                    exchange=row.exchange,
                    routing_key=row.routing_key,
                    message_id=f"copy-{uuid.uuid4().hex}",
                    headers=row.headers,
                    correlation_id=row.correlation_id,
                )

        async def settled() -> bool:
            finals = {"0001": "SUCCESS", "0002": "SUCCESS", "0003": "FAILED", "0004": "SUCCESS"}
            for prefix, status in finals.items():
                if await _status(http, merchant, t.payout_of[prefix]) != status:
                    return False
            copies = [e for e in t.lines("processor") if "already made" in e["message"]]
            return len([e for e in copies if t.copied in e["message"]]) >= COPIES

        await eventually(settled, within=20, interval=0.2, what="every payout settled")
    yield t


async def _is(http: httpx.AsyncClient, merchant: NewMerchant, payout_id: str, status: str) -> bool:
    return await _status(http, merchant, payout_id) == status


async def _psp_reference(http: httpx.AsyncClient, merchant: NewMerchant, payout_id: str) -> bool:
    response = await http.get(f"/payouts/{payout_id}", headers=auth(merchant, ""))
    return response.json()["data"]["pspReference"] is not None


def _moves(trail: Trail, payout_id: str) -> list[tuple[str, str, str, int]]:
    """(level, from, to, attempt) of each status change the processor logged for the payout."""
    return [
        (e["level"], e["from_status"], e["to_status"], e["attempt"])
        for e in trail.of_payout("processor", payout_id)
        if "to_status" in e
    ]


def test_the_processor_logs_each_status_change_of_a_payout(trail: Trail) -> None:
    """Before, the processor wrote no line about a payout it moved (PENDING -> PROCESSING ->
    SUCCESS / FAILED / RETRY / PENDING at the PSP): its log named none of these payouts. Now a
    line per change, INFO for a final outcome (a 0003 failure too: no warning), DEBUG for a step,
    with the payout's merchant and request ids."""
    assert _moves(trail, trail.payout_of["0001"]) == [
        ("DEBUG", "PENDING", "PROCESSING", 1),
        ("INFO", "PROCESSING", "SUCCESS", 1),
    ]
    assert _moves(trail, trail.payout_of["0002"]) == [
        ("DEBUG", "PENDING", "PROCESSING", 1),
        ("DEBUG", "PROCESSING", "RETRY", 1),
        ("DEBUG", "RETRY", "PROCESSING", 2),
        ("INFO", "PROCESSING", "SUCCESS", 2),
    ]
    assert _moves(trail, trail.payout_of["0003"]) == [
        ("DEBUG", "PENDING", "PROCESSING", 1),
        ("INFO", "PROCESSING", "FAILED", 1),
    ]
    for payout_id in trail.payout_of.values():
        lines = [e for e in trail.of_payout("processor", payout_id) if "to_status" in e]
        assert all(e["merchant_id"] == trail.merchant.merchant_id for e in lines), show(lines)
        assert all(e.get("correlation_id") for e in lines), show(lines)
    failed = trail.of_payout("processor", trail.payout_of["0003"])
    assert not [e for e in failed if e["level"] in ("WARNING", "ERROR")], show(failed)


def test_the_processor_logs_the_outcome_an_ipn_applied(trail: Trail) -> None:
    """Before, applying the PSP's SUCCESS to a payout pending at the PSP wrote nothing."""
    assert _moves(trail, trail.ipn_payout) == [
        ("DEBUG", "PENDING", "PROCESSING", 1),
        ("DEBUG", "PROCESSING", "PENDING", 1),
        ("INFO", "PENDING", "SUCCESS", 1),
    ]


def test_the_api_logs_each_payout_it_created_once(trail: Trail) -> None:
    """Before, no API line named a payout it accepted (201): the X-Request-ID a merchant quotes
    led to no API line. Now one INFO line per create, with the payout's id and status; the
    create's replay under the same idempotency key adds none."""
    for payout_id in trail.payout_of.values():
        created = [e for e in trail.of_payout("api", payout_id) if e["message"] == "payout created"]
        assert len(created) == 1, show(created)
        [line] = created
        assert line["level"] == "INFO"
        assert line["status"] == "PENDING"
        assert line["request_id"] and line["merchant_id"] == trail.merchant.merchant_id
    replayed = [
        e for e in trail.of_payout("api", trail.replayed) if e["message"] == "payout created"
    ]
    assert len(replayed) == 1, show(replayed)


def test_the_api_logs_a_payroll_once_with_how_many_it_created(trail: Trail) -> None:
    """Before, a payroll wrote no line at all. Now one line per payroll (not one per item)."""
    lines = [e for e in trail.lines("api") if e["message"].startswith("payroll:")]
    assert len(lines) == 1, show(lines)
    [line] = lines
    assert line["level"] == "INFO" and line["payouts_created"] == PAYROLL, line
    assert line["request_id"] and line["merchant_id"] == trail.merchant.merchant_id
    for payout_id in trail.payroll_payouts:
        assert not [e for e in trail.of_payout("api", payout_id) if "created" in e["message"]]


def test_the_api_logs_the_ipn_outcome_it_accepted(trail: Trail) -> None:
    """Before, no API line named the payout of an IPN it accepted."""
    lines = [e for e in trail.of_payout("api", trail.ipn_payout) if "PSP outcome" in e["message"]]
    assert len(lines) == 1, show(lines)
    assert lines[0]["level"] == "INFO" and lines[0]["outcome"] == "SUCCESS"
    assert lines[0]["request_id"]


def test_commands_processed_together_keep_their_payouts_ids(trail: Trail) -> None:
    """Copies of a command that arrive together run in one batch (Consumer.run_together), in no
    message's log context: their "already made" lines carried no payout, merchant or
    correlation id, where the same line of a command run alone does."""
    lines = [
        e
        for e in trail.lines("processor")
        if "already made" in e["message"] and trail.copied in e["message"]
    ]
    assert len(lines) >= COPIES
    bare = [
        e
        for e in lines
        if e.get("payout_id") != trail.copied
        or e.get("merchant_id") != trail.merchant.merchant_id
        or not e.get("correlation_id")
    ]
    assert not bare, show(bare)
