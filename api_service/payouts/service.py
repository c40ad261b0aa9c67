"""Merchant operations on payouts. Functions take the request's session and never commit:
the endpoint's idempotency boundary commits."""

import contextlib
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails
from sqlalchemy import ColumnElement, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api_service.directory.active import ACTIVE_DIRECTORY, Institution
from api_service.errors import (
    DuplicateReference,
    InsufficientBalance,
    InvalidStatus,
    NotFound,
    OutcomeNotAppliedYet,
    ValidationFailed,
)
from api_service.pagination import Listed, ListQuery, Window, item_key, list_newest_first
from api_service.payouts.schemas import (
    CreatePayoutRequest,
    PayoutDestination,
    PayoutInstitution,
    PayoutListFilters,
)
from contracts import ledger
from contracts.db.engine import utcnow
from contracts.db.models import Merchant, Payout, table_of
from contracts.db.payouts import load_payout
from contracts.domain.accounts import (
    account_number_problem,
    domestic_wallet_number,
    iban_bank_code,
    normalize_account_number,
)
from contracts.domain.statuses import EventType, PayoutStatus, PspOutcome
from contracts.payout_events import Announcements
from contracts.payout_queue import QueueExpiry, schedule_expiry, start_queued_payouts


async def validate_destination(
    session: AsyncSession, destination: PayoutDestination
) -> tuple[str | None, str | None, str]:
    """(bank code, wallet code, account number) normalized, or ValidationFailed naming every
    field of the destination that is wrong."""
    problems: list[tuple[str, str]] = []
    institution = await _institution(session, destination, problems)
    number = _account_number(destination, institution, problems)
    if problems:
        raise ValidationFailed.on_each(problems)
    assert institution is not None  # else its code was refused
    if destination.dest_type == "BANK":
        return institution.code, None, number
    return None, institution.code, number


async def _institution(
    session: AsyncSession, where: PayoutInstitution, problems: list[tuple[str, str]]
) -> Institution | None:
    """The active bank or wallet the destination names; what is wrong added to `problems`. The
    other type's code is refused, not dropped: a body that names both a bank and a wallet does
    not say where the money goes."""
    dest_type = where.dest_type
    bank, wallet = ("bankCode", where.bank_code), ("walletCode", where.wallet_code)
    (field, code), (other_field, other_code) = (
        (bank, wallet) if dest_type == "BANK" else (wallet, bank)
    )
    institution = None
    if not code:
        problems.append((field, f"is required when destType is {dest_type}"))
    else:
        institution = await ACTIVE_DIRECTORY.find(session, dest_type, code)
        if institution is None:
            problem = f"'{code}' is not an active {dest_type.lower()} in the directory"
            problems.append((field, problem))
    if other_code:
        problems.append((other_field, f"is not taken when destType is {dest_type}"))
    return institution


def _account_number(
    destination: PayoutDestination,
    institution: Institution | None,
    problems: list[tuple[str, str]],
) -> str:
    """The account number normalized; what is wrong added to `problems`."""
    number = normalize_account_number(destination.account_number)
    if destination.dest_type == "WALLET":
        number = domestic_wallet_number(number)
    problem = account_number_problem(destination.dest_type, number)
    if problem:
        problems.append(("accountNumber", problem))
    # A bank the directory gives no IBAN code can be named by no IBAN: one of another bank's
    # was taken, so the money went to that bank's account under this bank's name.
    elif institution is not None and number.startswith("PK"):
        iban_code = iban_bank_code(number)
        if iban_code != institution.iban_code:
            mismatch = f"IBAN bank code {iban_code} does not match {institution.code}"
            problems.append(("accountNumber", mismatch))
    return number


async def new_payout_of(
    session: AsyncSession, merchant: Merchant, document: Any
) -> tuple[CreatePayoutRequest, Payout]:
    """The request a create's JSON document is, and the payout it makes (not stored yet); else
    ValidationFailed naming every field it gets wrong, its destination's too when another field
    is what was refused (a body with a bad reference and an unknown bank was told of the
    reference alone, and of the bank once the reference was fixed)."""
    try:
        request = CreatePayoutRequest.model_validate(document)
    except ValidationError as exc:
        errors = exc.errors()
        more = await _destination_refusal(session, _without_refused_fields(document, errors))
        raise ValidationFailed.from_pydantic(errors).with_details_of(more) from exc
    return request, await new_payout(session, merchant, request)


async def _destination_refusal(session: AsyncSession, judged: Any) -> ValidationFailed:
    """What is wrong with the destination of a document its refused fields are left out of
    (they are named already): judged on the fields that pass their own checks (no detail:
    nothing more than those checks found)."""
    try:
        await validate_destination(session, PayoutDestination.model_validate(judged))
    except ValidationFailed as refusal:
        return refusal
    except ValidationError:  # no account number to judge: the bank or wallet alone
        problems: list[tuple[str, str]] = []
        with contextlib.suppress(ValidationError):  # no destination type either
            await _institution(session, PayoutInstitution.model_validate(judged), problems)
        return ValidationFailed.on_each(problems)
    return ValidationFailed()


# Each destination field's two spellings (`accountNumber`, `account_number`).
_SPELLINGS = {
    spelling: {name, field.alias or name}
    for name, field in PayoutDestination.model_fields.items()
    for spelling in (name, field.alias or name)
}


def _without_refused_fields(document: Any, errors: Sequence[ErrorDetails]) -> Any:
    """The document without the fields its validation `errors` refuse, under either spelling
    (a destination field is judged by the same checks in CreatePayoutRequest as on its own)."""
    if not isinstance(document, dict):
        return document
    refused = {str(error["loc"][0]) for error in errors if error["loc"]}
    left_out = set().union(*(_SPELLINGS.get(key, {key}) for key in refused))
    return {key: value for key, value in document.items() if key not in left_out}


async def new_payout(
    session: AsyncSession, merchant: Merchant, request: CreatePayoutRequest
) -> Payout:
    """The payout a valid request makes, not stored yet (ValidationFailed naming the field)."""
    bank_code, wallet_code, account_number = await validate_destination(session, request)
    now = utcnow()
    return Payout(
        id=str(uuid.uuid4()),
        merchant_id=merchant.id,
        merchant_reference=request.merchant_reference,
        amount=request.amount,
        currency="PKR",
        dest_type=request.dest_type,
        bank_code=bank_code,
        wallet_code=wallet_code,
        account_number=account_number,
        account_title=request.account_title,
        purpose=request.purpose,
        status=PayoutStatus.PENDING.value,
        failure_reason=None,
        failure_code=None,
        psp_reference=None,
        attempts=0,
        hold_cycle=1,
        accepted_outcome=None,
        processed_at=None,
        created_at=now,
        updated_at=now,
        in_bulk=False,
    )


async def store_new_payouts(
    session: AsyncSession, payouts: Sequence[Payout], *, request_id: str
) -> None:
    """The payout rows, their `payout.created` events and processing commands, and their holds,
    in the caller's transaction: multi-row INSERTs first, the merchant's balance last (so its
    row is locked from its UPDATE to the commit only)."""
    await _insert(session, payouts)
    announcements = Announcements(request_id)
    for payout in payouts:
        announcements.event(payout, EventType.CREATED)
        announcements.process(payout)
    await announcements.write(session)
    try:
        await ledger.hold_many(
            session,
            merchant_id=payouts[0].merchant_id,
            holds=[(payout.id, payout.amount) for payout in payouts],
        )
    except ledger.InsufficientBalance as exc:
        raise InsufficientBalance from exc


async def store_new_payout_or_queue(
    session: AsyncSession, payout: Payout, *, request_id: str, queue_expiry: QueueExpiry
) -> Payout:
    """A create with `queueIfLowBalance`: the payout held and PENDING like any create when the
    available balance covers it (`payout.created`), else QUEUED with nothing held
    (`payout.queued`; contracts/payout_queue.py starts it when funds arrive). In the caller's
    transaction; the payout's status is set to the one stored.

    The balance's conditional UPDATE comes before the announcements (they depend on its answer).
    When it is short, the balance row is locked (`lock_balance`, the lock of the merchant's
    queue) before the payout turns QUEUED: a top-up either committed before (its funds are seen
    here, and the payout is held after all) or waits and then finds the payout in the queue, so
    no QUEUED payout is ever left with its funds available. A payout the available balance covers
    is held at once even when older ones are queued (they wait for more than is available)."""
    await _insert(session, [payout])
    held = await ledger.try_hold_funds(
        session,
        merchant_id=payout.merchant_id,
        payout_id=payout.id,
        hold_cycle=payout.hold_cycle,
        amount=payout.amount,
    )
    announcements = Announcements(request_id)
    if not held:
        available = await ledger.lock_balance(session, merchant_id=payout.merchant_id)
        if available < payout.amount:
            await _queue(session, payout, announcements)
            await schedule_expiry(session, [payout], queue_expiry)
            return payout
        await _hold(session, payout)  # funds arrived between the UPDATE and the lock
    announcements.event(payout, EventType.CREATED)
    announcements.process(payout)
    await announcements.write(session)
    return payout


async def store_queued_payouts(
    session: AsyncSession,
    payouts: Sequence[Payout],
    *,
    request_id: str,
    balance_locked: bool,
    queue_expiry: QueueExpiry,
) -> None:
    """Payouts of one merchant the available balance did not cover, stored QUEUED with their
    `payout.queued` events and their expiries (a payroll's items with `queueIfLowBalance`); then
    the queue starts what the balance covers by now (a top-up may have come in since it was
    read), whose in-memory status turns PENDING. `balance_locked`: this transaction holds the
    merchant's balance row already (it has just held the payroll's other items)."""
    for payout in payouts:
        payout.status = PayoutStatus.QUEUED.value
    await _insert(session, payouts)
    if not balance_locked:
        await ledger.lock_balance(session, merchant_id=payouts[0].merchant_id)
    announcements = Announcements(request_id)
    for payout in payouts:
        announcements.event(payout, EventType.QUEUED)
    await announcements.write(session)
    await schedule_expiry(session, payouts, queue_expiry)
    started = await start_queued_payouts(
        session, merchant_id=payouts[0].merchant_id, correlation_id=request_id
    )
    now_pending = {payout.id: payout for payout in started}
    for payout in payouts:
        if payout.id in now_pending:
            payout.status = now_pending[payout.id].status
            payout.updated_at = now_pending[payout.id].updated_at


async def _queue(session: AsyncSession, payout: Payout, announcements: Announcements) -> None:
    """Created -> QUEUED; the caller holds the merchant's balance row (the queue's lock)."""
    payout.status = PayoutStatus.QUEUED.value  # not attached to the session: no flush follows
    await session.execute(
        update(Payout)
        .where(Payout.id == payout.id)
        .values(status=payout.status)
        .execution_options(synchronize_session=False)
    )
    announcements.event(payout, EventType.QUEUED)
    await announcements.write(session)


_INSERT = insert(table_of(Payout))  # built once: neither rebuilt nor keyed per create


async def _insert(session: AsyncSession, payouts: Sequence[Payout]) -> None:
    try:
        await session.execute(_INSERT, [_columns(payout) for payout in payouts])
    except IntegrityError as exc:  # the unique key is the last word on references
        raise DuplicateReference from exc


def _columns(payout: Payout) -> dict[str, Any]:
    return {column.key: getattr(payout, column.key) for column in Payout.__table__.columns}


async def _hold(session: AsyncSession, payout: Payout) -> None:
    try:
        await ledger.hold_funds(
            session,
            merchant_id=payout.merchant_id,
            payout_id=payout.id,
            hold_cycle=payout.hold_cycle,
            amount=payout.amount,
        )
    except ledger.InsufficientBalance as exc:
        raise InsufficientBalance from exc


async def find_payout(
    session: AsyncSession, payout_id: str, *, merchant_id: str | None, lock: bool = False
) -> Payout:
    """The payout (of that merchant, when one asks), or NotFound."""
    payout = await load_payout(session, payout_id, merchant_id=merchant_id, lock=lock)
    if payout is None:
        raise NotFound("Payout not found")
    return payout


async def reinitiate_payout(
    session: AsyncSession, merchant: Merchant, payout_id: str, *, request_id: str
) -> Payout:
    """FAILED -> PENDING with the funds held again, in one transaction."""
    payout = await find_payout(session, payout_id, merchant_id=merchant.id, lock=True)
    if payout.status != PayoutStatus.FAILED:
        if payout.accepted_outcome == PspOutcome.FAILED:
            raise OutcomeNotAppliedYet
        raise InvalidStatus(f"Only FAILED payouts can be reinitiated; this one is {payout.status}")
    await _still_in_the_directory(session, payout)
    payout.status = PayoutStatus.PENDING.value
    payout.hold_cycle += 1
    payout.attempts = 0  # a new attempt cycle runs the scenario table from its start
    payout.failure_code = None
    payout.failure_reason = None
    payout.psp_reference = None  # a new hold cycle is submitted to the PSP afresh
    payout.processed_at = None
    payout.updated_at = utcnow()
    await session.flush()
    announcements = Announcements(request_id)
    announcements.event(payout, EventType.REINITIATED)
    announcements.process(payout)
    await announcements.write(session)
    await _hold(session, payout)
    return payout


async def _still_in_the_directory(session: AsyncSession, payout: Payout) -> None:
    """A payout is sent again only to a bank or wallet the directory still has active, as a
    create checks it: one switched off since (a merger, say) was paid again."""
    field, kind, code = (
        ("bankCode", "BANK", payout.bank_code)
        if payout.bank_code
        else ("walletCode", "WALLET", payout.wallet_code)
    )
    if code is None or await ACTIVE_DIRECTORY.find(session, kind, code) is None:
        raise ValidationFailed.on(
            field, f"'{code}' is no longer an active {kind.lower()} in the directory"
        )


def _filter_conditions(merchant: Merchant, filters: PayoutListFilters) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [Payout.merchant_id == merchant.id]
    if filters.status:
        conditions.append(Payout.status == filters.status.value)
    if filters.created_from:
        conditions.append(Payout.created_at >= filters.created_from)
    if filters.created_to:
        conditions.append(Payout.created_at <= filters.created_to)
    if filters.merchant_reference:
        conditions.append(Payout.merchant_reference == filters.merchant_reference)
    return conditions


_LIST_ORDER = (Payout.created_at, Payout.id)


def payout_cursor(merchant: Merchant) -> Callable[[Any], ListQuery]:
    return item_key(_LIST_ORDER, Payout.id, Payout.merchant_id == merchant.id)


async def list_payouts(
    session: AsyncSession, merchant: Merchant, filters: PayoutListFilters, window: Window
) -> Listed:
    conditions = _filter_conditions(merchant, filters)
    return await list_newest_first(session, select(Payout), conditions, _LIST_ORDER, window)
