"""Ledger reconciliation: every invariant of the double-entry ledger, checked with a handful of
aggregate queries (one pass over each table, fast on 100k payouts). Read-only.

Invariants (CONTRACT.md, "Ledger"): every journal balances; each merchant's balance row equals the
sum of its ledger lines per account; available >= 0 and held >= 0; each payout hold is posted or
released at most once per hold cycle; held equals the payouts still in flight; each payout's
current hold cycle has the journals of its status, its earlier ones were released, and it has no
journal outside them; each
payout journal moves the payout's amount between its kind's accounts; a journal of no payout is a
top-up into its own merchant's available; each journal's running balance (what /balance/history
shows) follows from the lines before it.
"""

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from contracts import ledger
from contracts.db.engine import begin_snapshot
from contracts.domain.money import format_amount
from contracts.domain.statuses import FUNDS_HELD_STATUSES, FailureCode, PayoutStatus
from contracts.ledger import Account, JournalKind

IN_FLIGHT = tuple(sorted(status.value for status in FUNDS_HELD_STATUSES))
TERMINAL_OR_QUEUED = (
    PayoutStatus.SUCCESS,
    PayoutStatus.REVERSED,
    PayoutStatus.FAILED,
    PayoutStatus.QUEUED,
)

# A journal moves money between two accounts: fewer than two lines is as wrong as a non-zero sum.
_UNBALANCED_JOURNALS = text(
    """
    SELECT j.id, j.merchant_id, j.payout_id, COALESCE(SUM(l.amount), 0) AS total,
           COUNT(l.id) AS line_count, COUNT(*) OVER () AS matching
    FROM ledger_journals j LEFT JOIN ledger_lines l ON l.journal_id = j.id
    GROUP BY j.id, j.merchant_id, j.payout_id
    HAVING COALESCE(SUM(l.amount), 0) <> 0 OR COUNT(l.id) < 2
    ORDER BY j.id
    LIMIT 100
    """
)

# Sums per merchant first (one pass over the lines), then compared with the balance rows.
_BALANCE_DRIFT = text(
    """
    SELECT b.merchant_id, b.available, b.held,
           COALESCE(s.available, 0) AS ledger_available, COALESCE(s.held, 0) AS ledger_held,
           COUNT(*) OVER () AS matching
    FROM balances b
    LEFT JOIN (
        SELECT merchant_id,
               SUM(CASE WHEN account = :available THEN amount ELSE 0 END) AS available,
               SUM(CASE WHEN account = :held THEN amount ELSE 0 END) AS held
        FROM ledger_lines
        WHERE merchant_id IS NOT NULL
        GROUP BY merchant_id
    ) s ON s.merchant_id = b.merchant_id
    WHERE b.available <> COALESCE(s.available, 0) OR b.held <> COALESCE(s.held, 0)
    ORDER BY b.merchant_id
    LIMIT 100
    """
)

# Lines that belong to no balance row, or sit on an account a merchant line cannot have.
_STRAY_LINES = text(
    """
    SELECT l.id, l.merchant_id, l.account, COUNT(*) OVER () AS matching
    FROM ledger_lines l LEFT JOIN balances b ON b.merchant_id = l.merchant_id
    WHERE (l.merchant_id IS NOT NULL AND (b.merchant_id IS NULL OR l.account = :settlement))
       OR (l.merchant_id IS NULL AND l.account <> :settlement)
    ORDER BY l.id
    LIMIT 100
    """
)

_NEGATIVE_BALANCES = text(
    """
    SELECT merchant_id, available, held, COUNT(*) OVER () AS matching FROM balances
    WHERE available < 0 OR held < 0
    ORDER BY merchant_id
    LIMIT 100
    """
)

# Per payout and hold cycle: exactly one HOLD, settled (PAYOUT or RELEASE) at most once, and a
# REVERSAL only of a hold that was paid out.
_HOLD_CYCLES = text(
    """
    SELECT payout_id, hold_cycle,
           SUM(kind = :hold) AS holds,
           SUM(kind IN (:payout, :release)) AS settlements,
           SUM(kind = :reversal) AS reversals, COUNT(*) OVER () AS matching
    FROM ledger_journals
    WHERE payout_id IS NOT NULL
    GROUP BY payout_id, hold_cycle
    HAVING SUM(kind = :hold) <> 1
        OR SUM(kind IN (:payout, :release)) > 1
        OR SUM(kind = :reversal) > SUM(kind = :payout)
    ORDER BY payout_id, hold_cycle
    LIMIT 100
    """
)

_HELD_VERSUS_IN_FLIGHT = text(
    """
    SELECT b.merchant_id, b.held, COALESCE(p.total, 0) AS in_flight, COUNT(*) OVER () AS matching
    FROM balances b
    LEFT JOIN (
        SELECT merchant_id, SUM(amount) AS total
        FROM payouts
        WHERE status IN :in_flight
        GROUP BY merchant_id
    ) p ON p.merchant_id = b.merchant_id
    WHERE b.held <> COALESCE(p.total, 0)
    ORDER BY b.merchant_id
    LIMIT 100
    """
).bindparams(bindparam("in_flight", value=IN_FLIGHT, expanding=True))


# Per payout, the journals of its current hold cycle against its status: in flight, held and
# not settled; SUCCESS paid out; REVERSED paid out and reversed; FAILED released (or never held:
# a queued payout that expired, QUEUE_EXPIRED, and no other: a FAILED payout whose HOLD and
# RELEASE were both gone passed); QUEUED nothing. (The checks above pass a SUCCESS payout whose
# hold was released, or a REVERSED one never reversed: the money moved, but not as it says.)
_STATUS_VERSUS_JOURNALS = text(
    """
    SELECT p.id, p.status, p.hold_cycle,
           COALESCE(SUM(j.kind = :hold), 0) AS holds,
           COALESCE(SUM(j.kind = :payout), 0) AS payouts,
           COALESCE(SUM(j.kind = :release), 0) AS releases,
           COALESCE(SUM(j.kind = :reversal), 0) AS reversals, COUNT(*) OVER () AS matching
    FROM payouts p
    LEFT JOIN ledger_journals j ON j.payout_id = p.id AND j.hold_cycle = p.hold_cycle
    GROUP BY p.id, p.status, p.hold_cycle, p.failure_code
    HAVING NOT (
           (p.status IN :in_flight AND holds = 1 AND payouts = 0 AND releases = 0
                AND reversals = 0)
        OR (p.status = :success AND holds = 1 AND payouts = 1 AND releases = 0 AND reversals = 0)
        OR (p.status = :reversed AND holds = 1 AND payouts = 1 AND releases = 0
                AND reversals = 1)
        OR (p.status = :failed AND payouts = 0 AND reversals = 0
                AND ((holds = 1 AND releases = 1)
                     OR (holds = 0 AND releases = 0 AND p.failure_code = :queue_expired)))
        OR (p.status = :queued AND holds = 0 AND payouts = 0 AND releases = 0 AND reversals = 0)
    )
    ORDER BY p.id
    LIMIT 100
    """
).bindparams(bindparam("in_flight", value=IN_FLIGHT, expanding=True))


# Each payout journal moves exactly the payout's amount, from its kind's debit account to its
# credit account, on the payout's merchant, and names that merchant (the dashboard's timeline
# finds a payout's journals by it): a ledger that balances but moved the wrong amount, or
# booked a PAYOUT back to available, passed every check above.
_PAYOUT_POSTINGS = (ledger.HOLD, ledger.RELEASE, ledger.PAYOUT, ledger.REVERSAL)
_KIND_ACCOUNT = "CASE j.kind {} END"
_DEBIT = _KIND_ACCOUNT.format(
    " ".join(f"WHEN '{p.kind.value}' THEN '{p.debit.value}'" for p in _PAYOUT_POSTINGS)
)
_CREDIT = _KIND_ACCOUNT.format(
    " ".join(f"WHEN '{p.kind.value}' THEN '{p.credit.value}'" for p in _PAYOUT_POSTINGS)
)
_MISPOSTED_JOURNALS = text(
    f"""
    SELECT j.id, j.kind, j.payout_id, p.amount, COUNT(*) OVER () AS matching
    FROM ledger_journals j
    JOIN payouts p ON p.id = j.payout_id
    JOIN ledger_lines l ON l.journal_id = j.id
    GROUP BY j.id, j.kind, j.payout_id, p.amount, p.merchant_id
    HAVING COUNT(*) <> 2
        OR SUM(l.account = {_DEBIT} AND l.amount = -p.amount) <> 1
        OR SUM(l.account = {_CREDIT} AND l.amount = p.amount) <> 1
        OR SUM(l.merchant_id IS NOT NULL AND l.merchant_id <> p.merchant_id) > 0
        OR SUM(j.merchant_id <> p.merchant_id) > 0
    ORDER BY j.id
    LIMIT 100
    """
)

# A journal that names no payout is a top-up: it moves a positive amount from the shared
# psp_settlement account to its own merchant's available, in two lines. (The check above joins
# payouts: a REVERSAL of no payout, or a top-up booked backwards or to another merchant, passed.)
_MISPOSTED_TOP_UPS = text(
    """
    SELECT j.id, j.kind, j.merchant_id, COUNT(*) OVER () AS matching
    FROM ledger_journals j
    JOIN ledger_lines l ON l.journal_id = j.id
    WHERE j.payout_id IS NULL
    GROUP BY j.id, j.kind, j.merchant_id
    HAVING j.kind <> :topup
        OR COUNT(*) <> 2
        OR SUM(l.account = :settlement AND l.merchant_id IS NULL AND l.amount < 0) <> 1
        OR SUM(l.account = :available AND l.merchant_id = j.merchant_id AND l.amount > 0) <> 1
    ORDER BY j.id
    LIMIT 100
    """
)

# A payout goes to its next hold cycle only from FAILED (reinitiate): every earlier cycle was
# released, or never held (a queued payout that expired), and never paid out.
_UNRELEASED_EARLIER_CYCLES = text(
    """
    SELECT j.payout_id, j.hold_cycle,
           SUM(j.kind = :hold) AS holds, SUM(j.kind = :release) AS releases,
           SUM(j.kind IN (:payout, :reversal)) AS paid, COUNT(*) OVER () AS matching
    FROM ledger_journals j
    JOIN payouts p ON p.id = j.payout_id
    WHERE j.hold_cycle < p.hold_cycle
    GROUP BY j.payout_id, j.hold_cycle
    HAVING SUM(j.kind = :hold) <> SUM(j.kind = :release) OR SUM(j.kind IN (:payout, :reversal)) > 0
    ORDER BY j.payout_id, j.hold_cycle
    LIMIT 100
    """
)


# A payout journal belongs to one of the cycles its payout went through: 1 to its current one.
# (The two checks above read the current cycle and those before it: a HOLD and a PAYOUT booked in
# a cycle above it, or in none, debited the merchant twice, and reconcile was clean.)
_JOURNALS_OUTSIDE_CYCLES = text(
    """
    SELECT j.id, j.kind, j.payout_id, j.hold_cycle, p.hold_cycle AS current_cycle,
           COUNT(*) OVER () AS matching
    FROM ledger_journals j
    JOIN payouts p ON p.id = j.payout_id
    WHERE j.hold_cycle IS NULL OR j.hold_cycle < 1 OR j.hold_cycle > p.hold_cycle
    ORDER BY j.id
    LIMIT 100
    """
)


# What /balance/history shows a merchant: each of a journal's lines carries the balance and
# available the whole journal left, which follow from the merchant's lines up to the journal's
# last (in line order: a merchant's lines are written under its balance row's lock). Every line
# is judged, NULL-safely: read at a journal's last line alone, a wrong first line of a HOLD or
# a RELEASE went unseen, and a line without its balances too (ledger review).
_RUNNING_BALANCE_DRIFT = text(
    """
    SELECT id, journal_id, merchant_id, balance_after, available_after, balance, available,
           COUNT(*) OVER () AS matching
    FROM (
        SELECT l.id, l.journal_id, l.merchant_id, l.balance_after, l.available_after,
               SUM(l.amount) OVER up_to_the_journals_end AS balance,
               SUM(CASE WHEN l.account = :available THEN l.amount ELSE 0 END)
                   OVER up_to_the_journals_end AS available
        FROM (
            SELECT l.*, MAX(l.id) OVER (PARTITION BY l.merchant_id, l.journal_id) AS journal_end
            FROM ledger_lines l
            WHERE l.merchant_id IS NOT NULL
        ) AS l
        WINDOW up_to_the_journals_end AS (
            PARTITION BY l.merchant_id ORDER BY l.journal_end
            RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        )
    ) AS running
    WHERE NOT (balance_after <=> balance) OR NOT (available_after <=> available)
    ORDER BY id
    LIMIT 100
    """
)


def _money(value: Decimal) -> str:
    return format_amount(Decimal(value))


def _shown(value: Decimal | None) -> str:
    return "(none)" if value is None else _money(value)


@dataclass(frozen=True)
class LedgerProblems:
    lines: list[str]  # at most 100 of each kind, then a line saying how many more
    count: int  # every problem, listed or not


async def _listed(
    session: AsyncSession, query: TextClause, line: Callable[..., str], what: str, **params: str
) -> LedgerProblems:
    """A line per row of `query` (each lists at most 100, the matching count in its last
    column), and one saying how many more match: 110 running balances off were 100 lines,
    without a word of the other 10 (reconcile review)."""
    rows = [tuple(row) for row in await session.execute(query, params)]
    lines = [line(*row[:-1]) for row in rows]
    matching = int(rows[0][-1]) if rows else 0
    if matching > len(rows):
        lines.append(f"... and {matching - len(rows)} more {what} not listed")
    return LedgerProblems(lines, matching)


async def reconcile(session: AsyncSession) -> list[str]:
    """Every violated ledger invariant, one line each (at most 100 of each kind, then how many
    more); an empty list means the ledger is clean."""
    return (await ledger_problems(session)).lines


async def ledger_problems(session: AsyncSession) -> LedgerProblems:
    """Every violated ledger invariant: the lines `reconcile` prints, and how many in all (the
    audit the relay keeps counted the "and N more" line as one: diff review)."""
    await begin_snapshot(session)
    kinds = {kind.name.lower(): kind.value for kind in JournalKind}
    accounts = {"available": Account.AVAILABLE.value, "held": Account.HELD.value}
    statuses = {status.name.lower(): status.value for status in TERMINAL_OR_QUEUED}
    checks: list[tuple[TextClause, Callable[..., str], str, dict[str, str]]] = [
        (
            _UNBALANCED_JOURNALS,
            lambda journal, merchant, payout, total, count: (
                f"journal {journal} (merchant {merchant}"
                f"{'' if payout is None else f', payout {payout}'}) does not balance: {count} "
                f"lines summing to {_money(total)}"
            ),
            "unbalanced journals",
            {},
        ),
        (
            _BALANCE_DRIFT,
            lambda merchant, available, held, ledger_available, ledger_held: (
                f"merchant {merchant} balance row (available {_money(available)}, held "
                f"{_money(held)}) differs from its ledger lines (available "
                f"{_money(ledger_available)}, held {_money(ledger_held)})"
            ),
            "balance rows off their lines",
            accounts,
        ),
        (
            _STRAY_LINES,
            lambda line, merchant, account: (
                f"ledger line {line} on account {account} has no matching balance "
                f"(merchant {merchant})"
            ),
            "stray ledger lines",
            {"settlement": Account.PSP_SETTLEMENT.value},
        ),
        (
            _NEGATIVE_BALANCES,
            lambda merchant, available, held: (
                f"merchant {merchant} balance is negative: available {_money(available)}, "
                f"held {_money(held)}"
            ),
            "negative balances",
            {},
        ),
        (
            _HOLD_CYCLES,
            lambda payout, cycle, holds, settlements, reversals: (
                f"payout {payout} hold cycle {cycle}: {holds} holds, {settlements} "
                f"postings/releases, {reversals} reversals (expected one hold, settled at most "
                "once, reversed only if paid)"
            ),
            "hold cycles",
            kinds,
        ),
        (
            _HELD_VERSUS_IN_FLIGHT,
            lambda merchant, held, in_flight: (
                f"merchant {merchant} held {_money(held)} but its payouts in flight "
                f"({', '.join(IN_FLIGHT)}) total {_money(in_flight)}"
            ),
            "merchants whose held differs from their payouts in flight",
            {},
        ),
        (
            _STATUS_VERSUS_JOURNALS,
            lambda payout, status, cycle, holds, payouts, releases, reversals: (
                f"payout {payout} is {status} but its hold cycle {cycle} has {holds} HOLD, "
                f"{payouts} PAYOUT, {releases} RELEASE and {reversals} REVERSAL journals"
            ),
            "payouts whose journals do not match their status",
            {**kinds, **statuses, "queue_expired": FailureCode.QUEUE_EXPIRED.value},
        ),
        (_MISPOSTED_JOURNALS, _misposted, "misposted payout journals", {}),
        (
            _MISPOSTED_TOP_UPS,
            lambda journal, kind, merchant: (
                f"journal {journal} ({kind}) names no payout, so it must be a TOPUP moving "
                f"money from {Account.PSP_SETTLEMENT.value} to the {Account.AVAILABLE.value} "
                f"of its merchant {merchant}"
            ),
            "misposted journals of no payout",
            {
                "topup": JournalKind.TOPUP.value,
                "settlement": Account.PSP_SETTLEMENT.value,
                "available": Account.AVAILABLE.value,
            },
        ),
        (
            _RUNNING_BALANCE_DRIFT,
            lambda line, journal, merchant, shown, shown_available, balance, available: (
                f"ledger line {line} of journal {journal} shows merchant {merchant} a balance "
                f"of {_shown(shown)} and available {_shown(shown_available)} after it, where "
                f"its ledger lines make {_money(balance)} and {_money(available)}"
            ),
            "running balances off",
            {"available": Account.AVAILABLE.value},
        ),
        (
            _UNRELEASED_EARLIER_CYCLES,
            lambda payout, cycle, holds, releases, paid: (
                f"payout {payout} hold cycle {cycle}, before its current one, has {holds} HOLD "
                f"and {releases} RELEASE journals and {paid} PAYOUT or REVERSAL (a reinitiated "
                "payout's earlier cycles are released, never paid)"
            ),
            "earlier hold cycles",
            kinds,
        ),
        (
            _JOURNALS_OUTSIDE_CYCLES,
            lambda journal, kind, payout, cycle, current: (
                f"journal {journal} ({kind}) of payout {payout} is booked in "
                f"{'no hold cycle' if cycle is None else f'hold cycle {cycle}'}, outside the "
                f"cycles the payout went through (1 to its current {current})"
            ),
            "journals outside their payout's cycles",
            {},
        ),
    ]
    found = [
        await _listed(session, query, line, what, **params) for query, line, what, params in checks
    ]
    return LedgerProblems(
        [line for kind in found for line in kind.lines], sum(kind.count for kind in found)
    )


def _misposted(journal: int, kind: str, payout: str, amount: Decimal) -> str:
    """The line of a payout's journal that does not move the payout's amount as its kind does;
    or of a journal of another kind that names a payout (a TOPUP of a payout raised
    StopIteration here, and reconcile printed a traceback instead of every problem)."""
    posting = next((posting for posting in _PAYOUT_POSTINGS if posting.kind == kind), None)
    if posting is None:
        kinds = ", ".join(posting.kind.value for posting in _PAYOUT_POSTINGS)
        return f"journal {journal} ({kind}) names payout {payout}: a payout's journals are {kinds}"
    return (
        f"journal {journal} ({kind}) of payout {payout} does not move its amount "
        f"{_money(amount)} from {posting.debit.value} to {posting.credit.value}"
    )


@dataclass(frozen=True)
class LedgerSize:
    merchants: int
    journals: int


async def ledger_size(session: AsyncSession) -> LedgerSize:
    """How much was reconciled, for the operator's summary line."""
    merchants, journals = (
        await session.execute(
            text("SELECT (SELECT COUNT(*) FROM balances), (SELECT COUNT(*) FROM ledger_journals)")
        )
    ).one()
    return LedgerSize(merchants=int(merchants), journals=int(journals))
