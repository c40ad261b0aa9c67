"""Bulk payouts (a payroll): up to 1,000 payouts in one request and one transaction.

Each item is judged on its own: created, duplicate (its merchantReference already names a payout
of this merchant: the answer names it, so a payroll sent twice creates nothing twice), or invalid
(the field named, like a single create's 400; an item the available balance no longer covers,
in the order sent, is invalid on `amount`, or, with `queueIfLowBalance`, created QUEUED; an item
repeating the reference of an earlier item that is created is invalid on `merchantReference`).
The valid items are written together: multi-row INSERTs and one move of the balance for all.

The items are judged on one consistent read. A request of the same merchant that commits one of
their references, or spends the balance, between that read and the batch's writes makes the
writes fail: the batch's writes are then undone and it is judged again on fresh reads
(JudgedOnStaleState; its idempotency key stays claimed, so no other request takes it), which
gives the per-item answer the two requests would have had one after the other. That judgement
holds the merchant's balance row from the start, so spending cannot make it stale again (live
traffic spending the balance in every window failed the whole payroll with a 422).
"""

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api_service.errors import (
    DuplicateReference,
    InsufficientBalance,
    JudgedOnStaleState,
    ValidationFailed,
)
from api_service.payouts.service import new_payout_of, store_new_payouts, store_queued_payouts
from api_service.request_body import first_flaw
from contracts import ledger
from contracts.db.models import Balance, Merchant, Payout
from contracts.payout_queue import QueueExpiry
from contracts.payout_view import PayoutView

MAX_BATCH_ITEMS = 1000
# An item repeating the reference of an earlier item that is created: "repeats item <index>".
REPEATS_ITEM = "repeats item"


@dataclass
class BatchResult:
    items: list[dict[str, Any]] = field(default_factory=list)

    def add(self, index: int, reference: Any, status: str, **details: Any) -> None:
        self.items.append(
            {"index": index, "merchantReference": reference, "status": status, **details}
        )

    def as_json(self) -> dict[str, Any]:
        ordered = sorted(self.items, key=lambda item: int(item["index"]))
        statuses = [item["status"] for item in ordered]
        summary = {status: statuses.count(status) for status in ("created", "duplicate", "invalid")}
        return {"results": ordered, "summary": summary}


def _reference(raw: Any) -> str | None:
    """An invalid item's merchantReference, echoed only when the answer can carry it: a number
    (a Decimal here) or a lone surrogate would make the whole batch's answer unencodable. Either
    spelling, as a body may use either."""
    if not isinstance(raw, dict):
        return None
    reference = raw.get("merchantReference", raw.get("merchant_reference"))
    if not isinstance(reference, str):
        return None
    try:
        reference.encode()
    except UnicodeEncodeError:
        return None
    return reference


@dataclass(frozen=True)
class JudgedBatch:
    result: BatchResult  # the invalid and the duplicate items
    to_create: list[tuple[int, Payout]]  # the others, in the order sent (not stored)
    # Items with queueIfLowBalance the available balance does not cover: created QUEUED.
    to_queue: list[tuple[int, Payout]] = field(default_factory=list)


async def judge_batch(session: AsyncSession, merchant: Merchant, items: list[Any]) -> JudgedBatch:
    """Every item judged, nothing written: invalid, duplicate, or to be created. The dashboard
    shows this as the preview of a payroll file; `create_batch` then stores the last kind."""
    result = BatchResult()
    queue_if_short: set[int] = set()
    candidates = await _valid_items(session, merchant, items, result, queue_if_short)
    existing = await _existing_references(
        session, merchant, [p.merchant_reference for _, p in candidates]
    )
    fresh = []
    for index, payout in candidates:
        if payout.merchant_reference in existing:
            payout_id = existing[payout.merchant_reference]
            result.add(index, payout.merchant_reference, "duplicate", payoutId=payout_id)
        else:
            fresh.append((index, payout))
    covered, queued = await _created_in_order(session, merchant, fresh, result, queue_if_short)
    return JudgedBatch(result, covered, queued)


async def create_batch(
    session: AsyncSession,
    merchant: Merchant,
    items: list[Any],
    *,
    request_id: str,
    queue_expiry: QueueExpiry,
    balance_locked_first: bool = False,
) -> dict[str, Any]:
    """Every item's result; the created payouts written in the caller's transaction.
    `balance_locked_first`: judged with the merchant's balance row locked (a judgement again)."""
    if balance_locked_first:
        await ledger.lock_balance(session, merchant_id=merchant.id)
    judged = await judge_batch(session, merchant, items)
    covered, queued, result = judged.to_create, judged.to_queue, judged.result
    if len(covered) + len(queued) > 1:
        for _, payout in covered + queued:
            payout.in_bulk = True
    try:
        if covered:
            payouts = [payout for _, payout in covered]
            await store_new_payouts(session, payouts, request_id=request_id)
        if queued:
            await store_queued_payouts(
                session,
                [payout for _, payout in queued],
                request_id=request_id,
                balance_locked=balance_locked_first or bool(covered),
                queue_expiry=queue_expiry,
            )
    except (DuplicateReference, InsufficientBalance) as refusal:
        raise JudgedOnStaleState(refusal) from refusal
    for index, payout in covered + queued:
        view = PayoutView.of(payout).model_dump(mode="json", by_alias=True)
        result.add(index, payout.merchant_reference, "created", payout=view)
    return result.as_json()


async def _valid_items(
    session: AsyncSession,
    merchant: Merchant,
    items: list[Any],
    result: BatchResult,
    queue_if_short: set[int],
) -> list[tuple[int, Payout]]:
    """The items that make a payout, in order; the others recorded as invalid. The indexes of
    valid items with queueIfLowBalance are added to `queue_if_short`."""
    valid: list[tuple[int, Payout]] = []
    for index, raw in enumerate(items):
        flaw = first_flaw(raw)  # a key given twice, a number out of range (parse_items_leniently)
        if flaw is not None:
            result.add(index, _reference(raw), "invalid", errors=flaw.details)
            continue
        try:
            request, payout = await new_payout_of(session, merchant, raw)
            valid.append((index, payout))
            if request.queue_if_low_balance:
                queue_if_short.add(index)
        except ValidationFailed as failure:
            result.add(index, _reference(raw), "invalid", errors=failure.details)
    return valid


async def _existing_references(
    session: AsyncSession, merchant: Merchant, references: list[str]
) -> dict[str, str]:
    if not references:
        return {}
    rows = await session.execute(
        select(Payout.merchant_reference, Payout.id).where(
            Payout.merchant_id == merchant.id, Payout.merchant_reference.in_(references)
        )
    )
    return {reference: payout_id for reference, payout_id in rows}


async def _created_in_order(
    session: AsyncSession,
    merchant: Merchant,
    payouts: list[tuple[int, Payout]],
    result: BatchResult,
    queue_if_short: set[int],
) -> tuple[list[tuple[int, Payout]], list[tuple[int, Payout]]]:
    """(covered, queued), taking the payouts in the order sent: one repeating the reference of an
    earlier one that is created is invalid; the available balance covers the others in turn, and
    those it does not are queued when they asked to be, else invalid on amount. The balance is
    read without a lock: the one conditional UPDATE of the total has the last word."""
    if not payouts:
        return [], []
    available = await session.scalar(
        select(Balance.available).where(Balance.merchant_id == merchant.id)
    ) or Decimal(0)
    covered, queued = [], []
    creator_of: dict[str, int] = {}  # reference -> the item that creates it
    for index, payout in payouts:
        reference = payout.merchant_reference
        refusal = None
        if reference in creator_of:
            refusal = ValidationFailed.on(
                "merchantReference", f"{REPEATS_ITEM} {creator_of[reference]}"
            )
        elif payout.amount <= available:
            available -= payout.amount
            covered.append((index, payout))
        elif index in queue_if_short:
            queued.append((index, payout))
        else:
            refusal = ValidationFailed.on("amount", "exceeds the available balance")
        if refusal is None:
            creator_of[reference] = index
        else:
            result.add(index, reference, "invalid", errors=refusal.details)
    return covered, queued
