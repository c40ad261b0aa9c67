"""Chaos on request, end to end with the real processes and real webhook receivers: a client
that follows the rules passes every readiness item; a careless one fails exactly the items it
broke; under 10 % injected faults at load, retries with the same key leave one payout per
reference and a ledger that reconciles."""

import asyncio
import json
import random
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory
from contracts.db.models import Payout
from contracts.reconcile import reconcile
from tests.conftest import MerchantFactory
from tests.support.fault_load import duplicated_effects, settled
from tests.support.polling import eventually
from tests.support.scenarios import SCENARIOS, Scenario
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.slow

FAULT = "X-Sandbox-Fault"
CHAOS = {"duplicatePercent": 100, "staleTimestampPercent": 100, "oldSecretOnly": True}
REPORTS = Path(".run/readiness-reports")
SCRIPTED_FIRST_STATUS = {
    "0006": "SUCCESS",
    "0007": "PROCESSING",
    "0008": "PENDING",
    "0009": "RETRY",
}


class Client:
    """A merchant's integration: creates retry on a lost answer, with the same key when
    `careful`, and honour Retry-After."""

    def __init__(self, http: httpx.AsyncClient, merchant: NewMerchant, *, careful: bool) -> None:
        self.http, self.merchant, self.careful = http, merchant, careful

    def headers(self, key: str | None = None, fault: str | None = None) -> dict[str, str]:
        headers = {"X-API-KEY": self.merchant.api_key}
        if key:
            headers["X-IDEMPOTENCY-KEY"] = key
        if fault:
            headers[FAULT] = fault
        return headers

    async def answer(self, path: str, body: Any, fault: str | None = None) -> httpx.Response:
        """POST until an answer arrives that is not a lost one (dropped, 5xx) nor a 429; the
        first try carries `fault`."""
        key = str(uuid.uuid4())
        while True:
            try:
                response = await self.http.post(path, json=body, headers=self.headers(key, fault))
            except httpx.TransportError:  # a dropped connection: the answer was lost
                response = None
            fault = None
            if response is not None and response.status_code == 429:
                await asyncio.sleep(float(response.headers["retry-after"]))
            elif response is not None and response.status_code < 500:
                return response
            elif not self.careful:
                key = str(uuid.uuid4())  # the classic bug: a retry is a new request

    async def post(self, path: str, body: Any, fault: str | None = None) -> dict[str, Any]:
        response = await self.answer(path, body, fault)
        assert response.status_code < 300, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    async def put(self, path: str, body: Any) -> None:
        response = await self.http.put(path, json=body, headers=self.headers())
        assert response.status_code == 200, response.text

    async def payout(self, payout_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/payouts/{payout_id}", headers=self.headers())
        data: dict[str, Any] = response.json()["data"]
        return data

    async def reaches(self, payout_id: str, status: str) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            payout = await self.payout(payout_id)
            return payout if payout["status"] == status else None

        return await eventually(probe, within=30, what=f"{payout_id} {status}")

    async def readiness(self) -> dict[str, Any]:
        response = await self.http.get("/sandbox/readiness", headers=self.headers())
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    async def rotate_secret_and_unleash_chaos(self, **chaos: Any) -> str:
        # The old secret retired at once: old-secret chaos waits for the end of its grace.
        rotated = await self.post(
            "/webhook-endpoint/rotate-secret", {"previousSecretGraceHours": 0}
        )
        await self.put("/sandbox/webhook-chaos", {**CHAOS, **chaos})
        secret: str = rotated["secret"]
        return secret


def save_report(name: str, report: dict[str, Any]) -> None:
    """Kept for a reader (and the closing note) under .run/."""
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / f"{name}.json").write_text(json.dumps(report, indent=2))


def verdicts(report: dict[str, Any]) -> dict[str, str]:
    return {item["id"]: item["status"] for item in report["items"]}


async def test_a_client_that_follows_the_rules_passes_every_readiness_item(
    http: httpx.AsyncClient, make_merchant: MerchantFactory, receiver: WebhookReceiver
) -> None:
    merchant = await make_merchant(webhook_url=receiver.url)
    client = Client(http, merchant, careful=True)
    receiver.verify_with(await client.rotate_secret_and_unleash_chaos())

    created = {s.name: await client.post("/payouts", s.request_body()) for s in SCENARIOS}
    await client.post("/payouts", SCENARIOS[0].request_body(), fault="timeout-after-commit")
    await client.post("/payouts", SCENARIOS[0].request_body(), fault="status=429")
    await client.post("/payouts", SCENARIOS[0].request_body(), fault="drop-connection")
    for name, status in (
        ("0004 pending at the PSP", "PENDING"),
        ("0005 on hold", "ON_HOLD"),
        ("large amount in review", "IN_REVIEW"),
    ):
        await client.reaches(created[name]["id"], status)
        await client.post(
            f"/sandbox/payouts/{created[name]['id']}/simulate", {"outcome": "SUCCESS"}
        )
    succeeded = await client.reaches(created["0001 succeeds"]["id"], "SUCCESS")
    await client.post(f"/sandbox/payouts/{succeeded['id']}/simulate", {"outcome": "REVERSED"})
    failed = await client.reaches(created["0003 fails"]["id"], "FAILED")
    await client.post(f"/payouts/{failed['id']}/reinitiate", None)
    # The scripted ones end days later by the sandbox clock: once each has taken its first
    # step (its later steps are scheduled from there), 49 h go by in one call.
    for suffix, first_status in SCRIPTED_FIRST_STATUS.items():
        body = {**SCENARIOS[0].request_body(), "accountNumber": f"123456{suffix}"}
        await client.reaches((await client.post("/payouts", body))["id"], first_status)
    await client.post("/sandbox/clock/advance", {"seconds": 49 * 3600})

    async def ready() -> dict[str, Any] | None:
        report = await client.readiness()
        return report if report["summary"]["ready"] else None

    try:
        report = await eventually(ready, within=90, interval=1, what="every item passed")
    finally:
        save_report("careful-client", await client.readiness())
    assert set(verdicts(report).values()) == {"passed"}


async def test_a_careless_client_fails_exactly_what_it_broke(
    http: httpx.AsyncClient, make_merchant: MerchantFactory, receiver: WebhookReceiver
) -> None:
    """It retries a lost create with a new idempotency key, and its webhook receiver accepts
    whatever arrives: stale timestamps and signatures of a rotated-out secret included."""
    merchant = await make_merchant(webhook_url=receiver.url)
    client = Client(http, merchant, careful=False)
    # Its receiver takes an event's first attempt, stale or not: half the events come stale,
    # the others signed with the old secret (15 events: both kinds all but surely appear).
    await client.rotate_secret_and_unleash_chaos(staleTimestampPercent=50)
    for _ in range(4):
        await client.post("/payouts", SCENARIOS[0].request_body())

    lost = await client.answer(
        "/payouts", SCENARIOS[0].request_body(), fault="timeout-after-commit"
    )
    assert lost.json()["error"]["code"] == "DUPLICATE_REFERENCE"  # the reference saved it
    broken = {"timeout_retry_same_key", "stale_timestamp_refused", "wrong_signature_refused"}

    async def judged() -> dict[str, Any] | None:
        report = await client.readiness()
        return report if all(verdicts(report)[item] != "not_tried" for item in broken) else None

    report = await eventually(judged, within=60, interval=1, what="the broken items judged")
    save_report("careless-client", report)
    failed = {item for item, verdict in verdicts(report).items() if verdict == "failed"}
    assert failed == broken
    assert verdicts(report)["duplicates_accepted"] == "passed"


FAULTS = ("status=503", "status=429", "status=500", "drop-connection", "timeout-after-commit")


async def test_ledger_stays_clean_under_ten_percent_injected_faults_at_load(
    http: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant(balance="100000000.00")
    client = Client(http, merchant, careful=True)
    chosen = random.Random(13)
    bodies = [(SCENARIOS[i % len(SCENARIOS)], i) for i in range(150)]
    accepted: dict[str, Scenario] = {}
    references: list[str] = []
    limit = asyncio.Semaphore(12)

    async def one(scenario: Scenario, index: int) -> None:
        body = scenario.request_body()
        references.append(body["merchantReference"])
        fault = chosen.choice(FAULTS) if index % 10 == 0 else None
        async with limit:
            payout = await client.post("/payouts", body, fault=fault)
        accepted[payout["id"]] = scenario

    await asyncio.gather(*(one(scenario, index) for scenario, index in bodies))

    async def all_settled() -> bool:
        return await settled(sessions, accepted) == len(accepted)

    await eventually(all_settled, within=60, interval=0.5, what="every payout at rest")
    async with sessions() as session:
        per_reference = await session.execute(
            select(Payout.merchant_reference, func.count())
            .where(Payout.merchant_id == merchant.merchant_id)
            .group_by(Payout.merchant_reference)
        )
        counts = {reference: count for reference, count in per_reference}
    async with sessions() as session:  # its own snapshot: a session that read began another
        assert await reconcile(session) == []
    assert counts == dict.fromkeys(references, 1)
    assert len(accepted) == len(references)
    assert await duplicated_effects(sessions, accepted) == 0
