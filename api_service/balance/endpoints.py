from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import select
from starlette.responses import Response

from api_service.deps import CurrentMerchant, PublicIdsDep, SessionDep
from api_service.envelope import SuccessEnvelope, json_response, success_body
from api_service.errors import AUTH_ERRORS, error_responses
from api_service.pagination import (
    STARTING_AFTER,
    PageNumber,
    PageSize,
    Pagination,
    item_key,
    list_newest_first,
    pagination_json,
    window_of,
)
from contracts.db.models import Balance, LedgerJournal, LedgerLine
from contracts.domain.money import format_amount
from contracts.ledger import JournalKind
from contracts.public_ids import PublicIds
from contracts.wire import MoneyText, TimestampText, format_timestamp

router = APIRouter(prefix="/balance", tags=["balance"])
_HISTORY_ORDER = (LedgerLine.id,)


class BalanceView(BaseModel):
    currency: str
    balance: MoneyText = Field(description="availableBalance + lockedBalance")
    lockedBalance: MoneyText = Field(description="Held for payouts not settled yet")
    availableBalance: MoneyText
    version: int = Field(
        description="Goes up by one with every ledger journal that moves the balance"
    )


class BalanceEnvelope(SuccessEnvelope[BalanceView]):
    pass


class LedgerEntryView(BaseModel):
    id: int
    journalId: int
    type: JournalKind
    account: Literal["available", "held"]
    amount: MoneyText = Field(description="Negative when the money left the account")
    balanceAfter: MoneyText | None
    availableAfter: MoneyText | None
    payoutId: str | None
    description: str
    createdAt: TimestampText


class BalanceHistory(BaseModel):
    entries: list[LedgerEntryView]
    pagination: Pagination


class BalanceHistoryEnvelope(SuccessEnvelope[BalanceHistory]):
    pass


def ledger_entry_json(
    line: LedgerLine, journal: LedgerJournal, public_ids: PublicIds
) -> dict[str, Any]:
    """One entry of the history: a ledger line of the merchant, with its journal (their public
    ids: contracts.public_ids)."""
    return {
        "id": public_ids.public(line.id),
        "journalId": public_ids.public(journal.id),
        "type": journal.kind,
        "account": line.account.lower(),
        "amount": format_amount(line.amount),
        "balanceAfter": format_amount(line.balance_after)
        if line.balance_after is not None
        else None,
        "availableAfter": format_amount(line.available_after)
        if line.available_after is not None
        else None,
        "payoutId": journal.payout_id,
        "description": journal.description,
        "createdAt": format_timestamp(line.created_at),
    }


@router.get(
    "",
    response_model=BalanceEnvelope,
    responses=error_responses(*AUTH_ERRORS),
    summary="Current balance",
)
async def get_balance(merchant: CurrentMerchant, session: SessionDep) -> Response:
    balance = await session.get(Balance, merchant.id)
    assert balance is not None, "every merchant is created with a balance row"
    data = {
        "currency": balance.currency,
        "balance": format_amount(balance.available + balance.held),
        "lockedBalance": format_amount(balance.held),
        "availableBalance": format_amount(balance.available),
        "version": balance.version,
    }
    return json_response(success_body(data))


@router.get(
    "/history",
    response_model=BalanceHistoryEnvelope,
    responses=error_responses(*AUTH_ERRORS),
    summary="The merchant's ledger lines, newest first (page/limit or startingAfter cursor)",
)
async def get_balance_history(
    merchant: CurrentMerchant,
    session: SessionDep,
    public_ids: PublicIdsDep,
    page: PageNumber = None,
    limit: PageSize = 20,
    starting_after: Annotated[
        int | None,
        Query(
            alias=STARTING_AFTER,
            ge=1,
            description="The previous page's `nextCursor`: older lines (not with `page`)",
        ),
    ] = None,
) -> Response:
    mine = LedgerLine.merchant_id == merchant.id
    window = await window_of(
        session,
        page=page,
        # A number no id maps to names no line (0): the 400 of any other that is not theirs.
        starting_after=None if starting_after is None else public_ids.internal(starting_after) or 0,
        limit=limit,
        cursor_key=item_key(_HISTORY_ORDER, LedgerLine.id, mine),
        items="ledger lines",
    )
    query = select(LedgerLine, LedgerJournal).join(
        LedgerJournal, LedgerJournal.id == LedgerLine.journal_id
    )
    # Every line has its journal: a page's total counts the merchant's lines alone (counting the
    # join scanned every merchant's lines, 1.5 M rows read at 300,000 payouts: plans review).
    lines = select(LedgerLine.id)
    listed = await list_newest_first(session, query, [mine], _HISTORY_ORDER, window, lines)
    entries = [
        ledger_entry_json(row.LedgerLine, row.LedgerJournal, public_ids) for row in listed.rows
    ]
    last = public_ids.public(listed.rows[-1][0].id) if listed.rows else None
    pagination = pagination_json(listed, window, last)
    return json_response(success_body({"entries": entries, "pagination": pagination}))
