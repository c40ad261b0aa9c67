"""A payout's timeline: every status event with its time, under each event its webhook delivery
and every attempt (with the exact request sent), and the ledger lines the payout moved."""

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api_service.balance.endpoints import ledger_entry_json
from api_service.dashboard.api_bridge import MerchantApi
from api_service.dashboard.signed_requests import SignedRequest, signed_request
from contracts.db.models import LedgerJournal, LedgerLine
from contracts.domain.statuses import TERMINAL_STATUSES, PayoutStatus
from contracts.public_ids import PublicIds
from contracts.webhooks import DeliveryStatus

UNSETTLED_DELIVERIES = {DeliveryStatus.PENDING.value, DeliveryStatus.RETRYING.value}


@dataclass(frozen=True)
class TimelineEntry:
    event: dict[str, Any]  # the webhook body of the event, as GET /events shows it
    delivery: dict[str, Any] | None  # as GET /webhooks/deliveries shows it, attempts included
    requests: list[SignedRequest]  # what each attempt sent, in attempt order


@dataclass(frozen=True)
class Timeline:
    payout: dict[str, Any]
    entries: list[TimelineEntry]  # oldest first
    ledger: list[dict[str, Any]]  # both sides of each journal, in posting order

    @property
    def settled(self) -> bool:
        """Nothing will change without someone acting: the page may stop refreshing. An event
        the webhook service has not recorded a delivery for yet will get one (a final event's
        row comes a moment after the payout's final status, even with no webhook URL: PARKED)."""
        waiting = any(
            entry.delivery is None or entry.delivery["status"] in UNSETTLED_DELIVERIES
            for entry in self.entries
        )
        return PayoutStatus(self.payout["status"]) in TERMINAL_STATUSES and not waiting


async def payout_ledger(
    session: AsyncSession, public_ids: PublicIds, merchant_id: str, payout_id: str
) -> list[dict[str, Any]]:
    """Every line of the merchant's journals of this payout, the settlement side included (the
    history shows only the merchant's own lines). Indexed by the journals' payout key."""
    rows = await session.execute(
        select(LedgerLine, LedgerJournal)
        .join(LedgerJournal, LedgerJournal.id == LedgerLine.journal_id)
        .where(LedgerJournal.payout_id == payout_id, LedgerJournal.merchant_id == merchant_id)
        .order_by(LedgerLine.id)
    )
    return [ledger_entry_json(line, journal, public_ids) for line, journal in rows]


async def payout_timeline(api: MerchantApi, payout_id: str) -> Timeline:
    payout = (await api.payout(payout_id)).data  # first: another merchant's id is a 404 here
    events = (await api.events(payout_id=payout_id)).data["events"]
    deliveries = (await api.deliveries(payout_id=payout_id)).data["deliveries"]
    by_event = {delivery["eventId"]: delivery for delivery in deliveries}
    grace = timedelta(hours=api.settings.webhook_secret_grace_hours)
    merchant = await api.merchant_with_secrets()

    def entry(event: dict[str, Any]) -> TimelineEntry:
        delivery = by_event.get(event["id"])
        attempts = delivery["attempts"] if delivery else []
        requests = [signed_request(event, attempt, merchant, grace) for attempt in attempts]
        return TimelineEntry(event, delivery, requests)

    ledger = await payout_ledger(api.session, await api.public_ids(), api.merchant.id, payout_id)
    return Timeline(payout, [entry(event) for event in reversed(events)], ledger)
