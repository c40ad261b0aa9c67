"""Background load for fault tests, and the Jepsen-style accounting of what it left behind."""

import asyncio
import itertools
import json
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory
from contracts.db.models import LedgerJournal, OutboxMessage, Payout, PayoutEvent, WebhookDelivery
from tests.support.api_helpers import auth
from tests.support.scenarios import SCENARIOS, Scenario
from tests.support.webhook_receiver import WebhookReceiver

REQUEST_TIMEOUT_SECONDS = 15.0  # the API must answer (503 at worst) well within this
REPORTS = Path(".run/fault-reports")


@dataclass
class Load:
    """Creates payouts across the scenario table until stopped; remembers every answer."""

    http: httpx.AsyncClient
    merchant: NewMerchant
    accepted: dict[str, Scenario] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)  # "201", "503", "timeout", ...
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, *, workers: int = 4, pause: float = 0.05) -> None:
        scenarios = itertools.cycle(SCENARIOS)
        await asyncio.gather(*(self._worker(scenarios, pause) for _ in range(workers)))

    async def _worker(self, scenarios: "itertools.cycle[Scenario]", pause: float) -> None:
        while not self.stop.is_set():
            scenario = next(scenarios)
            try:
                response = await self.http.post(
                    "/payouts",
                    json=scenario.request_body(),
                    headers=auth(self.merchant),
                    timeout=REQUEST_TIMEOUT_SECONDS,
                )
            except httpx.TimeoutException:
                self.statuses["timeout"] += 1
            except httpx.TransportError:
                self.statuses["connection error"] += 1
            else:
                self.statuses[str(response.status_code)] += 1
                if response.status_code == 201:
                    self.accepted[response.json()["data"]["id"]] = scenario
            await asyncio.sleep(pause)


@dataclass(frozen=True)
class Verdict:
    fault: str
    accepted: int
    finished: int
    lost: int
    duplicated_effects: int
    webhook_deliveries: int
    duplicate_webhook_deliveries: int
    undelivered_events: int
    answers: dict[str, int]

    def table(self) -> str:
        rows = [(name, str(value)) for name, value in self.__dict__.items()]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"| {name.ljust(width)} | {value} |" for name, value in rows)

    def save(self) -> None:
        REPORTS.mkdir(parents=True, exist_ok=True)
        (REPORTS / f"{self.fault}.json").write_text(json.dumps(self.__dict__, indent=2))


async def settled(sessions: SessionFactory, accepted: dict[str, Scenario]) -> int:
    """How many accepted payouts are at their scenario's resting status."""
    async with sessions() as session:
        rows = await session.execute(
            select(Payout.id, Payout.status, Payout.psp_reference).where(
                Payout.id.in_(list(accepted))
            )
        )
        return sum(
            accepted[payout_id].is_final({"status": status, "pspReference": reference})
            for payout_id, status, reference in rows
        )


# The scenario table chooses by account and amount (0001 reaches review at 100,000.00).
SCENARIO_OF = {
    (scenario.account_number, Decimal(scenario.amount)): scenario for scenario in SCENARIOS
}


async def all_at_rest(sessions: SessionFactory, merchant_id: str) -> bool:
    """Every payout of the merchant at its scenario's resting status: the accepted ones, and any
    whose create committed but whose answer was lost (a 503 or a connection cut after the
    commit). Nothing waited for those, and their events came after the deliveries were counted
    (snapshot audit)."""
    async with sessions() as session:
        rows = await session.execute(
            select(Payout.account_number, Payout.amount, Payout.status, Payout.psp_reference).where(
                Payout.merchant_id == merchant_id
            )
        )
        return all(
            SCENARIO_OF[account, amount].is_final({"status": status, "pspReference": reference})
            for account, amount, status, reference in rows
        )


async def _count_per_payout(
    sessions: SessionFactory, payout_column: Any, payout_ids: list[str]
) -> Counter[str]:
    async with sessions() as session:
        rows = await session.execute(
            select(payout_column, func.count())
            .where(payout_column.in_(payout_ids))
            .group_by(payout_column)
        )
        return Counter({payout_id: count for payout_id, count in rows})


async def duplicated_effects(sessions: SessionFactory, accepted: dict[str, Scenario]) -> int:
    """Journals or status events beyond what each payout's scenario produces exactly once."""
    journals = await _count_per_payout(sessions, LedgerJournal.payout_id, list(accepted))
    events = await _count_per_payout(sessions, PayoutEvent.payout_id, list(accepted))
    return sum(
        max(journals[pid] - len(s.journals), 0) + max(events[pid] - len(s.events), 0)
        for pid, s in accepted.items()
    )


async def event_ids(sessions: SessionFactory, merchant_id: str) -> set[str]:
    async with sessions() as session:
        return set(
            await session.scalars(
                select(PayoutEvent.id).where(PayoutEvent.merchant_id == merchant_id)
            )
        )


async def verdict(
    fault: str, load: Load, sessions: SessionFactory, receiver: WebhookReceiver
) -> Verdict:
    finished = await settled(sessions, load.accepted)
    delivered = [request.headers["webhook-id"] for request in receiver.requests]
    expected = await event_ids(sessions, load.merchant.merchant_id)
    return Verdict(
        fault=fault,
        accepted=len(load.accepted),
        finished=finished,
        lost=len(load.accepted) - finished,
        duplicated_effects=await duplicated_effects(sessions, load.accepted),
        webhook_deliveries=len(delivered),
        duplicate_webhook_deliveries=len(delivered) - len(set(delivered)),
        undelivered_events=len(expected - set(delivered)),
        answers=dict(load.statuses),
    )


async def undelivered(
    sessions: SessionFactory, merchant_id: str, delivered: set[str], *, limit: int = 10
) -> tuple[list[str], str]:
    """Where the events no webhook reached stand: their delivery rows, and the outbox rows that
    carry them (a failed fault test says which part of the pipeline held them)."""
    async with sessions() as session:
        missing = sorted((await event_ids(sessions, merchant_id)) - delivered)
        deliveries = await session.execute(
            select(
                WebhookDelivery.event_id,
                WebhookDelivery.status,
                WebhookDelivery.attempts,
                WebhookDelivery.retry_count,
                WebhookDelivery.next_attempt_at,
                WebhookDelivery.leased_until,
                WebhookDelivery.copied_at,
                WebhookDelivery.last_error,
            ).where(WebhookDelivery.event_id.in_(missing[:limit]))
        )
        rows = {row.event_id: row for row in deliveries}
        lines = [f"{len(missing)} event(s) undelivered; the first {min(limit, len(missing))}:"]
        for event_id in missing[:limit]:
            outbox = await session.execute(
                select(OutboxMessage.id, OutboxMessage.sent_at, OutboxMessage.parked_at)
                .where(OutboxMessage.body.contains(event_id.encode()))
                .limit(3)
            )
            lines.append(f"  {event_id}: delivery {rows.get(event_id)!r}; outbox {outbox.all()!r}")
        return missing[:limit], "\n".join(lines)
