"""Double-entry postings. Each function is one journal whose lines sum to zero, written in the
caller's transaction together with the balance row it keeps equal to the ledger.

Accounts: per merchant `AVAILABLE` and `HELD`; one shared `PSP_SETTLEMENT` (the outside world).
"""

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from functools import cache
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Insert,
    Select,
    bindparam,
    func,
    insert,
    literal,
    null,
    select,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.db.engine import utcnow
from contracts.db.models import Balance, LedgerJournal, LedgerLine, Payout, table_of
from contracts.domain.money import MAX_BALANCE, format_amount
from contracts.domain.statuses import PayoutStatus


class Account(StrEnum):
    AVAILABLE = "AVAILABLE"
    HELD = "HELD"
    PSP_SETTLEMENT = "PSP_SETTLEMENT"


class JournalKind(StrEnum):
    HOLD = "HOLD"
    RELEASE = "RELEASE"
    PAYOUT = "PAYOUT"
    REVERSAL = "REVERSAL"
    TOPUP = "TOPUP"


class InsufficientBalance(Exception):
    """The merchant's available balance does not cover the amount."""


class BalanceLimitExceeded(Exception):
    """The merchant's balance (available plus held) would exceed MAX_BALANCE, or, for a top-up,
    leave no room for the reversals its successful payouts may still bring back."""


# What a refused top-up's amount is told, wherever it came from (the API, the CLI).
TOP_UP_PAST_THE_LIMIT = (
    f"would take the balance past {format_amount(MAX_BALANCE)}, counting the successful payouts "
    "a reversal may still return to it"
)


class UnknownMerchantBalance(Exception):
    """No balance row: the merchant does not exist."""


@dataclass(frozen=True)
class Posting:
    kind: JournalKind
    debit: Account  # money leaves this account
    credit: Account  # money enters this account
    description: str


HOLD = Posting(JournalKind.HOLD, Account.AVAILABLE, Account.HELD, "Funds held for payout")
RELEASE = Posting(JournalKind.RELEASE, Account.HELD, Account.AVAILABLE, "Hold released")
PAYOUT = Posting(JournalKind.PAYOUT, Account.HELD, Account.PSP_SETTLEMENT, "Payout sent")
REVERSAL = Posting(
    JournalKind.REVERSAL, Account.PSP_SETTLEMENT, Account.AVAILABLE, "Payout reversed by bank"
)
TOPUP = Posting(JournalKind.TOPUP, Account.PSP_SETTLEMENT, Account.AVAILABLE, "Balance top-up")

# Core tables and statements, built once: a posting neither rebuilds a statement nor walks it for
# its cache key (an ORM entity's statement is copied and keyed again on every execution).
_BALANCES = table_of(Balance)
_JOURNALS = insert(table_of(LedgerJournal))
_LINES = insert(table_of(LedgerLine))
_COLUMN = {Account.AVAILABLE: _BALANCES.c.available, Account.HELD: _BALANCES.c.held}


@dataclass(frozen=True)
class _Balance:
    available: Decimal = Decimal(0)
    held: Decimal = Decimal(0)

    def moved(self, posting: Posting, amount: Decimal) -> "_Balance":
        """After `posting` of `amount`."""
        change = {posting.debit: -amount, posting.credit: amount}
        return _Balance(
            self.available + change.get(Account.AVAILABLE, Decimal(0)),
            self.held + change.get(Account.HELD, Decimal(0)),
        )


# The one UPDATE of a merchant's balance: both accounts moved at once by :b_available and
# :b_held (a posting's, or a batch's share), neither below zero (each debited account covers what
# is taken from it), their sum not above MAX_BALANCE (a ledger line's balance_after holds it: a
# top-up past it was the database's out-of-range error, a 500); its version goes up by the number
# of journals (:b_journals) that moved it, as /balance promises.
_MOVE_BALANCE = (
    update(_BALANCES)
    .where(
        _BALANCES.c.merchant_id == bindparam("b_merchant"),
        _BALANCES.c.available + bindparam("b_available", type_=_BALANCES.c.available.type) >= 0,
        _BALANCES.c.held + bindparam("b_held", type_=_BALANCES.c.held.type) >= 0,
        _BALANCES.c.available + _BALANCES.c.held + bindparam("b_available") + bindparam("b_held")
        <= MAX_BALANCE,
    )
    .values(
        available=_BALANCES.c.available + bindparam("b_available"),
        held=_BALANCES.c.held + bindparam("b_held"),
        version=_BALANCES.c.version + bindparam("b_journals", type_=_BALANCES.c.version.type),
        updated_at=bindparam("b_now"),
    )
)


async def post(
    session: AsyncSession,
    posting: Posting,
    *,
    merchant_id: str,
    amount: Decimal,
    payout_id: str | None = None,
    hold_cycle: int | None = None,
) -> None:
    """Move `amount` from debit to credit; the debited merchant account may not go negative.

    Three statements: the journal, then the balance row's one conditional UPDATE (it takes the
    row lock: from here to the caller's COMMIT other postings of this merchant wait), then the
    lines, which read the balance they leave behind from the row this transaction holds. The
    statements are built and compiled once (bind parameters `b_*` only).

    The lines are stamped once the row is held, not before the wait for it: the merchant's
    history lists lines in the order they took the row (by id), and a line stamped before
    its wait went back in time behind the lines written meanwhile."""
    if amount <= 0:
        raise ValueError(f"ledger amounts are positive, got {amount}")
    now = utcnow()
    journal_id = await _journal(session, posting, merchant_id, payout_id, hold_cycle, now)
    await _move_balance(session, merchant_id, _Balance().moved(posting, amount), now, journals=1)
    await _lines(session, posting, journal_id, merchant_id, amount, utcnow())


async def _journal(
    session: AsyncSession,
    posting: Posting,
    merchant_id: str,
    payout_id: str | None,
    hold_cycle: int | None,
    now: datetime,
) -> int:
    journal = cast(
        CursorResult[Any],
        await session.execute(
            _JOURNALS,
            {
                "merchant_id": merchant_id,
                "payout_id": payout_id,
                "hold_cycle": hold_cycle,
                "kind": posting.kind.value,
                "description": posting.description,
                "created_at": now,
            },
        ),
    )
    return int(journal.lastrowid)  # AUTO_INCREMENT id; INSERT ... RETURNING is not in MySQL 8


async def _lines(
    session: AsyncSession,
    posting: Posting,
    journal_id: int,
    merchant_id: str,
    amount: Decimal,
    now: datetime,
) -> None:
    await session.execute(
        _lines_statement(posting),
        {"b_journal": journal_id, "b_merchant": merchant_id, "b_amount": amount, "b_now": now},
    )


@cache
def _lines_statement(posting: Posting) -> Insert:
    """INSERT ledger_lines ... SELECT: the debit and the credit line of a journal, each reading the
    balance it leaves from the balance row this transaction has just updated (and holds); the
    shared PSP settlement account's line has no merchant and no balance."""
    amount = bindparam("b_amount", type_=LedgerLine.amount.type)
    merchant = bindparam("b_merchant", type_=LedgerLine.merchant_id.type)

    def line(account: Account, delta: ColumnElement[Decimal]) -> Select[Any]:
        mine = account in _COLUMN
        return select(
            bindparam("b_journal", type_=LedgerLine.journal_id.type),
            merchant if mine else null(),
            literal(account.value, type_=LedgerLine.account.type),
            delta,
            (_BALANCES.c.available + _BALANCES.c.held) if mine else null(),
            _BALANCES.c.available if mine else null(),
            bindparam("b_now", type_=LedgerLine.created_at.type),
        ).where(_BALANCES.c.merchant_id == merchant)

    columns = [
        "journal_id",
        "merchant_id",
        "account",
        "amount",
        "balance_after",
        "available_after",
        "created_at",
    ]
    both = union_all(line(posting.debit, -amount), line(posting.credit, amount))
    return _LINES.from_select(columns, both)


async def _move_balance(
    session: AsyncSession, merchant_id: str, share: _Balance, now: datetime, *, journals: int
) -> None:
    """The merchant's balance moved by `share`, the sum of `journals` journals;
    UnknownMerchantBalance, InsufficientBalance or BalanceLimitExceeded when it did not move."""
    if not await _balance_moved(session, merchant_id, share, now, journals=journals):
        await _refuse(session, merchant_id, share)


async def _balance_moved(
    session: AsyncSession, merchant_id: str, share: _Balance, now: datetime, *, journals: int
) -> bool:
    result = cast(
        CursorResult[Any],
        await session.execute(
            _MOVE_BALANCE,
            {
                "b_merchant": merchant_id,
                "b_available": share.available,
                "b_held": share.held,
                "b_journals": journals,
                "b_now": now,
            },
        ),
    )
    return bool(result.rowcount == 1)


async def _refuse(session: AsyncSession, merchant_id: str, share: _Balance) -> None:
    """Why the merchant's balance did not move: no balance row, not enough in it, or too much."""
    total = await session.scalar(
        select(Balance.available + Balance.held).where(Balance.merchant_id == merchant_id)
    )
    if total is None:
        raise UnknownMerchantBalance(merchant_id)
    if Decimal(total) + share.available + share.held > MAX_BALANCE:
        raise BalanceLimitExceeded(merchant_id)
    raise InsufficientBalance(merchant_id)


async def hold_funds(
    session: AsyncSession, *, merchant_id: str, payout_id: str, hold_cycle: int, amount: Decimal
) -> None:
    """available -> held; InsufficientBalance when the available balance does not cover it
    (the journal is written by then: the caller rolls its transaction back)."""
    await post(
        session,
        HOLD,
        merchant_id=merchant_id,
        amount=amount,
        payout_id=payout_id,
        hold_cycle=hold_cycle,
    )


async def try_hold_funds(
    session: AsyncSession, *, merchant_id: str, payout_id: str, hold_cycle: int, amount: Decimal
) -> bool:
    """available -> held if the available balance covers it (True), else nothing written
    (False). The balance's conditional UPDATE comes first, the journal and its lines after it:
    a create that may be queued learns whether it is short before it writes anything it would
    have to take back. (The row is locked from that UPDATE to the commit, as in `post`; a
    failed UPDATE keeps no lock under READ COMMITTED.)"""
    if amount <= 0:
        raise ValueError(f"ledger amounts are positive, got {amount}")
    hold = _Balance().moved(HOLD, amount)
    if not await _balance_moved(session, merchant_id, hold, utcnow(), journals=1):
        return False
    held_at = utcnow()  # as in `post`: stamped once the row is held
    journal_id = await _journal(session, HOLD, merchant_id, payout_id, hold_cycle, held_at)
    await _lines(session, HOLD, journal_id, merchant_id, amount, held_at)
    return True


async def lock_balance(session: AsyncSession, *, merchant_id: str) -> Decimal:
    """The merchant's available balance, its balance row locked until the transaction ends
    (UnknownMerchantBalance without one). The row is also the lock of the merchant's queue of
    QUEUED payouts (contracts/payout_queue.py)."""
    available = await session.scalar(
        select(Balance.available).where(Balance.merchant_id == merchant_id).with_for_update()
    )
    if available is None:
        raise UnknownMerchantBalance(merchant_id)
    return Decimal(available)


async def lock_balances(session: AsyncSession, merchant_ids: Collection[str]) -> None:
    """The merchants' balance rows locked until the transaction ends, in merchant id order (as
    `post_many` moves them: taken first, they are still taken in one order)."""
    await session.execute(
        select(Balance.merchant_id)
        .where(Balance.merchant_id.in_(sorted(merchant_ids)))
        .order_by(Balance.merchant_id)
        .with_for_update()
    )


async def top_up(session: AsyncSession, *, merchant_id: str, amount: Decimal) -> None:
    """psp_settlement -> available; BalanceLimitExceeded (the caller rolls back) when the balance
    and every SUCCESS payout's amount (a reversal brings it back: the PSP's callback is accepted
    at any time, and the processor must then be able to post it) would exceed MAX_BALANCE.
    Postings other than a top-up keep that sum as it is; a top-up is the one that adds to it.
    Read once the posting holds the balance row: no payout of the merchant turns SUCCESS or
    REVERSED meanwhile, as each moves the balance too."""
    await post(session, TOPUP, merchant_id=merchant_id, amount=amount)
    with_reversible = await session.scalar(_BALANCE_WITH_REVERSIBLE, {"merchant_id": merchant_id})
    if Decimal(with_reversible or 0) > MAX_BALANCE:
        raise BalanceLimitExceeded(merchant_id)


_REVERSIBLE = (
    select(func.coalesce(func.sum(Payout.amount), 0))
    .where(  # ix_payouts_merchant_status_created
        Payout.merchant_id == bindparam("merchant_id"),
        Payout.status == PayoutStatus.SUCCESS.value,
    )
    .scalar_subquery()
)
_BALANCE_WITH_REVERSIBLE = select(_BALANCES.c.available + _BALANCES.c.held + _REVERSIBLE).where(
    _BALANCES.c.merchant_id == bindparam("merchant_id")
)


async def hold_many(
    session: AsyncSession, *, merchant_id: str, holds: Sequence[tuple[str, Decimal]]
) -> None:
    """available -> held for many new payouts (hold cycle 1) at once, for a payroll
    (InsufficientBalance when the total is not available)."""
    await post_many(
        session,
        [(HOLD, Entry(merchant_id, payout_id, 1, amount)) for payout_id, amount in holds],
    )


@dataclass(frozen=True)
class Entry:
    """One payout's hold, as `post_many` posts it."""

    merchant_id: str
    payout_id: str
    hold_cycle: int
    amount: Decimal


_JOURNAL_IDS = select(
    LedgerJournal.payout_id, LedgerJournal.hold_cycle, LedgerJournal.kind, LedgerJournal.id
).where(
    LedgerJournal.payout_id.in_(bindparam("b_payouts", expanding=True)),
    LedgerJournal.kind.in_(bindparam("b_kinds", expanding=True)),
)
_BALANCES_OF = select(_BALANCES.c.merchant_id, _BALANCES.c.available, _BALANCES.c.held).where(
    _BALANCES.c.merchant_id.in_(bindparam("b_merchants", expanding=True))
)


async def post_many(session: AsyncSession, postings: Sequence[tuple[Posting, Entry]]) -> None:
    """Each posting of its entry's hold, as if posted one by one in this order, in five
    statements and one more per merchant beyond the first: the journals; their ids; each
    merchant's balance moved once by its share of the batch, merchants in id order (so two
    batches never wait for each other's rows in opposite orders; InsufficientBalance when a
    debited account does not cover it); the balances they leave; and every line, with the
    balance after its own journal, stamped once the rows are held (as in `post`). A single
    posting takes the three statements of `post`."""
    if not postings:
        return
    if len(postings) == 1:
        [(posting, entry)] = postings
        await post(
            session,
            posting,
            merchant_id=entry.merchant_id,
            amount=entry.amount,
            payout_id=entry.payout_id,
            hold_cycle=entry.hold_cycle,
        )
        return
    if any(entry.amount <= 0 for _, entry in postings):
        raise ValueError("ledger amounts are positive")
    now = utcnow()
    await session.execute(
        _JOURNALS,
        [
            {
                "merchant_id": entry.merchant_id,
                "payout_id": entry.payout_id,
                "hold_cycle": entry.hold_cycle,
                "kind": posting.kind.value,
                "description": posting.description,
                "created_at": now,
            }
            for posting, entry in postings
        ],
    )
    journal_ids = await _journal_ids(session, postings)
    shares: dict[str, _Balance] = {}
    journals: Counter[str] = Counter()
    for posting, entry in postings:
        shares[entry.merchant_id] = shares.get(entry.merchant_id, _Balance()).moved(
            posting, entry.amount
        )
        journals[entry.merchant_id] += 1
    for merchant_id in sorted(shares):
        await _move_balance(
            session, merchant_id, shares[merchant_id], now, journals=journals[merchant_id]
        )
    held_at = utcnow()
    after_all = await _balances(session, list(shares))
    # Back to each balance before the batch, then forward one journal at a time.
    running = {
        merchant_id: _Balance(
            balance.available - shares[merchant_id].available,
            balance.held - shares[merchant_id].held,
        )
        for merchant_id, balance in after_all.items()
    }
    lines: list[dict[str, Any]] = []
    for posting, entry in postings:
        balance = running[entry.merchant_id] = running[entry.merchant_id].moved(
            posting, entry.amount
        )
        journal_id = journal_ids[entry.payout_id, entry.hold_cycle, posting.kind.value]
        for account, delta in ((posting.debit, -entry.amount), (posting.credit, entry.amount)):
            mine = account in _COLUMN
            lines.append(
                {
                    "journal_id": journal_id,
                    "merchant_id": entry.merchant_id if mine else None,
                    "account": account.value,
                    "amount": delta,
                    "balance_after": balance.available + balance.held if mine else None,
                    "available_after": balance.available if mine else None,
                    "created_at": held_at,
                }
            )
    await session.execute(_LINES, lines)


async def _journal_ids(
    session: AsyncSession, postings: Sequence[tuple[Posting, Entry]]
) -> dict[tuple[str, int, str], int]:
    """(payout, hold cycle, kind) -> its journal's id (a unique key)."""
    rows = await session.execute(
        _JOURNAL_IDS,
        {
            "b_payouts": sorted({entry.payout_id for _, entry in postings}),
            "b_kinds": sorted({posting.kind.value for posting, _ in postings}),
        },
    )
    return {
        (payout_id, hold_cycle, kind): journal_id
        for payout_id, hold_cycle, kind, journal_id in rows
        if payout_id is not None and hold_cycle is not None
    }


async def _balances(session: AsyncSession, merchant_ids: Sequence[str]) -> dict[str, _Balance]:
    rows = await session.execute(_BALANCES_OF, {"b_merchants": list(merchant_ids)})
    return {merchant_id: _Balance(available, held) for merchant_id, available, held in rows}
