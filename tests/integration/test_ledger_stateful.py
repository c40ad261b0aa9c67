"""The ledger under random sequences of every money operation, against the real MariaDB.

A hypothesis state machine creates payouts (the API's create path), processes them (the
processor's transitions, one payout at a time or a batch together), settles them by IPN,
reinitiates, reverses and tops up, each step in its own transaction, and keeps a model of the
merchant's available and held balances and of every payout's status. After each step every
ledger invariant of the contract is checked, and an operation the model says is illegal must
raise its named error and change nothing.

Hypothesis drives the machine synchronously, so it runs in a worker thread and hands each
database coroutine to the test's event loop (where the engine's connections live).

`STATEFUL_EXAMPLES` (default 10, of up to 30 steps each: about 10 seconds) is the number of random
sequences; `make fuzz` raises it.
"""

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Any, ClassVar, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api_service import errors as api_errors
from api_service.payouts.schemas import CreatePayoutRequest
from api_service.payouts.service import new_payout, reinitiate_payout, store_new_payouts
from contracts import ledger
from contracts.clock import SANDBOX_TIME
from contracts.db.engine import SessionFactory, transaction
from contracts.db.models import (
    Balance,
    LedgerJournal,
    LedgerLine,
    Merchant,
    OutboxMessage,
    Payout,
    PayoutEvent,
)
from contracts.db.payouts import load_payouts
from contracts.domain.money import format_amount
from contracts.domain.statuses import AWAITING_PSP_DECISION, TERMINAL_STATUSES, PayoutStatus
from contracts.reconcile import reconcile
from processor_service import transitions
from processor_service.transitions import AWAITING_PROCESSING, PayoutChange, StaleTransition
from tests.conftest import MerchantFactory
from tests.support.strategies import amounts

T = TypeVar("T")
ZERO = Decimal("0.00")
RETRY_DELAY_MS = 1_000
STEP_TIMEOUT_SECONDS = 30

# Opening balances and payouts are drawn so that overdrafts, review-sized payouts and
# ordinary ones all happen within a few steps.
opening_balances = amounts(min_cents=5_000_000, max_cents=60_000_000)  # 50,000-600,000
payout_amounts = amounts(max_cents=2_000_000) | amounts(min_cents=10_000_000, max_cents=30_000_000)
top_ups = amounts(max_cents=20_000_000)
account_suffixes = st.sampled_from(["0001", "0002", "0003", "0004", "0005", "7777"])
has_payouts = precondition(lambda machine: bool(machine.model))


class Step(Enum):
    """What the processor does with a payout it is processing, and where that leaves it."""

    SUCCEED = PayoutStatus.SUCCESS
    FAIL = PayoutStatus.FAILED
    AWAIT_PSP = PayoutStatus.PENDING
    PUT_ON_HOLD = PayoutStatus.ON_HOLD
    SEND_TO_REVIEW = PayoutStatus.IN_REVIEW
    SCHEDULE_RETRY = PayoutStatus.RETRY


def apply_step(change: PayoutChange, step: Step) -> None:
    """The processor's transition for the step (SUCCEED and FAIL also serve the IPN)."""
    match step:
        case Step.SUCCEED:
            transitions.succeed(change, psp_reference=None)
        case Step.FAIL:
            transitions.fail(change, failure_code="ACCOUNT_INVALID", reason="rejected")
        case Step.AWAIT_PSP:
            transitions.await_psp(change)
        case Step.PUT_ON_HOLD:
            transitions.put_on_hold(change, reason="blocked")
        case Step.SEND_TO_REVIEW:
            transitions.send_to_review(change)
        case Step.SCHEDULE_RETRY:
            transitions.schedule_retry(change, reason="transient", delay_ms=RETRY_DELAY_MS)


async def changing(
    session: AsyncSession, payout_id: str, *steps: Callable[[PayoutChange], None]
) -> None:
    """The payout locked as the processor loads it, the steps applied and written."""
    payout = await session.scalar(select(Payout).where(Payout.id == payout_id).with_for_update())
    assert payout is not None
    change = PayoutChange(payout, correlation_id=None)
    for step in steps:
        step(change)
    await change.write(session, SANDBOX_TIME)


@dataclass(frozen=True)
class Harness:
    """The test's event loop and database, reachable from hypothesis's worker thread."""

    loop: asyncio.AbstractEventLoop
    sessions: SessionFactory
    make_merchant: MerchantFactory

    def run(self, awaitable: Awaitable[T]) -> T:
        async def on_the_loop() -> T:
            return await awaitable

        future = asyncio.run_coroutine_threadsafe(on_the_loop(), self.loop)
        return future.result(timeout=STEP_TIMEOUT_SECONDS)


@dataclass
class ModelPayout:
    amount: Decimal
    status: PayoutStatus
    hold_cycle: int = 1


@dataclass(frozen=True)
class Snapshot:
    """Everything an operation could write; an illegal one must leave all of it unchanged."""

    balance: tuple[Decimal, Decimal, int]
    payouts: tuple[tuple[Any, ...], ...]
    journals: int
    lines: int
    events: int
    outbox: int


class LedgerMachine(RuleBasedStateMachine):
    harness: ClassVar[Harness]

    def __init__(self) -> None:
        super().__init__()
        self.merchant_id = ""
        self.available = ZERO
        self.held = ZERO
        self.model: dict[str, ModelPayout] = {}
        # reconcile() sees the whole database: what it already reported (other tests, earlier
        # examples) is not this example's doing.
        self.known_problems: frozenset[str] = frozenset()

    # -- plumbing ---------------------------------------------------------------------------

    def in_transaction(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        async def unit_of_work() -> T:
            async with transaction(self.harness.sessions) as session:
                return await work(session)

        return self.harness.run(unit_of_work())

    def read(self, query: Callable[[AsyncSession], Awaitable[T]]) -> T:
        async def in_fresh_session() -> T:
            async with self.harness.sessions() as session:
                return await query(session)

        return self.harness.run(in_fresh_session())

    def expect_refused(
        self,
        error: type[Exception] | tuple[type[Exception], ...],
        work: Callable[[AsyncSession], Awaitable[object]],
    ) -> None:
        before = self.snapshot()
        with pytest.raises(error):
            self.in_transaction(work)
        assert self.snapshot() == before

    def perform(
        self,
        allowed: bool,
        error: type[Exception],
        work: Callable[[AsyncSession], Awaitable[object]],
    ) -> bool:
        """Run `work` in its own transaction if the model allows it; otherwise it must raise
        `error` and change nothing. True when it was applied."""
        if not allowed:
            self.expect_refused(error, work)
            return False
        self.in_transaction(work)
        return True

    def snapshot(self) -> Snapshot:
        merchant_id = self.merchant_id

        async def query(session: AsyncSession) -> Snapshot:
            balance = await session.get(Balance, merchant_id)
            assert balance is not None
            payouts = await session.execute(
                select(
                    Payout.id,
                    Payout.status,
                    Payout.hold_cycle,
                    Payout.attempts,
                    Payout.psp_reference,
                    Payout.failure_code,
                    Payout.updated_at,
                )
                .where(Payout.merchant_id == merchant_id)
                .order_by(Payout.id)
            )
            journal_ids = select(LedgerJournal.id).where(LedgerJournal.merchant_id == merchant_id)
            return Snapshot(
                balance=(balance.available, balance.held, balance.version),
                payouts=tuple(tuple(row) for row in payouts),
                journals=await count(
                    session, select(func.count()).select_from(journal_ids.subquery())
                ),
                lines=await count(
                    session,
                    select(func.count())
                    .select_from(LedgerLine)
                    .where(LedgerLine.journal_id.in_(journal_ids)),
                ),
                events=await count(
                    session,
                    select(func.count())
                    .select_from(PayoutEvent)
                    .where(PayoutEvent.merchant_id == merchant_id),
                ),
                outbox=await count(session, select(func.count()).select_from(OutboxMessage)),
            )

        return self.read(query)

    def pick(
        self, data: st.DataObject, legal: Collection[PayoutStatus], *, only_legal: bool = False
    ) -> tuple[str, ModelPayout]:
        """Mostly a payout the operation is legal for, sometimes any payout (to try an illegal
        one). Candidates in creation order, so a replayed example picks the same payout."""
        candidates = [key for key, payout in self.model.items() if payout.status in legal]
        try_any = not only_legal and data.draw(st.integers(0, 3), label="any payout") == 0
        if try_any or not candidates:
            candidates = list(self.model)
        payout_id = data.draw(st.sampled_from(candidates), label="payout")
        return payout_id, self.model[payout_id]

    def awaiting_processing(self) -> list[str]:
        return [key for key, payout in self.model.items() if payout.status in AWAITING_PROCESSING]

    def settle_in_model(self, payout: ModelPayout, status: PayoutStatus) -> None:
        """Money moves the contract prescribes for reaching `status`."""
        if status is PayoutStatus.SUCCESS:
            self.held -= payout.amount
        elif status is PayoutStatus.FAILED:
            self.held -= payout.amount
            self.available += payout.amount
        elif status is PayoutStatus.REVERSED:
            self.available += payout.amount
        payout.status = status

    # -- rules ------------------------------------------------------------------------------

    @initialize(opening=opening_balances)
    def open_account(self, opening: Decimal) -> None:
        self.known_problems = self.harness.run(reconcile_findings(self.harness.sessions))
        merchant = self.harness.run(self.harness.make_merchant(balance=opening))
        self.merchant_id = merchant.merchant_id
        self.available = opening

    @rule(amount=payout_amounts, suffix=account_suffixes)
    def create(self, amount: Decimal, suffix: str) -> None:
        merchant_id = self.merchant_id
        request = CreatePayoutRequest.model_validate(
            {
                "merchantReference": f"prop-{uuid.uuid4().hex}",
                "amount": format_amount(amount),
                "destType": "BANK",
                "bankCode": "HBL",
                "accountNumber": f"12345678{suffix}",
            }
        )

        async def work(session: AsyncSession) -> str:
            merchant = await session.get(Merchant, merchant_id)
            assert merchant is not None
            payout = await new_payout(session, merchant, request)
            await store_new_payouts(session, [payout], request_id="prop-create")
            return payout.id

        if amount > self.available:
            self.expect_refused(api_errors.InsufficientBalance, work)
            return
        payout_id = self.in_transaction(work)
        self.available -= amount
        self.held += amount
        self.model[payout_id] = ModelPayout(amount, PayoutStatus.PENDING)

    @has_payouts
    @rule(data=st.data())
    def start_processing(self, data: st.DataObject) -> None:
        payout_id, payout = self.pick(data, AWAITING_PROCESSING)

        async def work(session: AsyncSession) -> None:
            await changing(session, payout_id, transitions.start_processing)

        if self.perform(payout.status in AWAITING_PROCESSING, StaleTransition, work):
            payout.status = PayoutStatus.PROCESSING

    @has_payouts
    @rule(data=st.data(), step=st.sampled_from(Step))
    def process(self, data: st.DataObject, step: Step) -> None:
        """One processor attempt: start processing and apply the outcome, one transaction."""
        payout_id, payout = self.pick(data, AWAITING_PROCESSING)

        async def work(session: AsyncSession) -> None:
            await changing(
                session,
                payout_id,
                transitions.start_processing,
                lambda change: apply_step(change, step),
            )

        if self.perform(payout.status in AWAITING_PROCESSING, StaleTransition, work):
            self.settle_in_model(payout, step.value)

    @precondition(lambda machine: len(machine.awaiting_processing()) >= 2)
    @rule(data=st.data())
    def process_together(self, data: st.DataObject) -> None:
        """A batch of processor attempts (a batch of commands): several payouts locked at once,
        each started and given its outcome, all written together in one transaction."""
        ids = data.draw(
            st.lists(st.sampled_from(self.awaiting_processing()), min_size=2, unique=True),
            label="payouts",
        )
        steps = [data.draw(st.sampled_from(Step), label="step") for _ in ids]

        async def work(session: AsyncSession) -> None:
            payouts = await load_payouts(session, ids)
            changes = []
            for payout_id, step in zip(ids, steps, strict=True):
                change = PayoutChange(payouts[payout_id], correlation_id=None)
                transitions.start_processing(change)
                apply_step(change, step)
                changes.append(change)
            await transitions.write_changes(session, changes, SANDBOX_TIME)

        self.in_transaction(work)
        for payout_id, step in zip(ids, steps, strict=True):
            self.settle_in_model(self.model[payout_id], step.value)

    @has_payouts
    @rule(data=st.data(), step=st.sampled_from(Step))
    def finish_processing(self, data: st.DataObject, step: Step) -> None:
        """The outcome alone: legal on a payout left in PROCESSING (and, for success or
        failure, on any payout awaiting the PSP's decision)."""
        settles = step in (Step.SUCCEED, Step.FAIL)
        legal = AWAITING_PSP_DECISION if settles else {PayoutStatus.PROCESSING}
        payout_id, payout = self.pick(data, legal)

        async def work(session: AsyncSession) -> None:
            await changing(session, payout_id, lambda change: apply_step(change, step))

        if self.perform(payout.status in legal, StaleTransition, work):
            self.settle_in_model(payout, step.value)

    @has_payouts
    @rule(data=st.data(), succeeded=st.booleans())
    def settle_by_ipn(self, data: st.DataObject, succeeded: bool) -> None:
        """The PSP's callback: SUCCESS or FAILED for a payout it has not decided yet."""
        payout_id, payout = self.pick(data, AWAITING_PSP_DECISION)
        step = Step.SUCCEED if succeeded else Step.FAIL

        async def work(session: AsyncSession) -> None:
            await changing(session, payout_id, lambda change: apply_step(change, step))

        if self.perform(payout.status in AWAITING_PSP_DECISION, StaleTransition, work):
            self.settle_in_model(payout, step.value)

    @has_payouts
    @rule(data=st.data())
    def reverse(self, data: st.DataObject) -> None:
        """The bank returned a paid-out payout."""
        payout_id, payout = self.pick(data, {PayoutStatus.SUCCESS})

        async def work(session: AsyncSession) -> None:
            await changing(session, payout_id, transitions.reverse)

        if self.perform(payout.status is PayoutStatus.SUCCESS, StaleTransition, work):
            self.settle_in_model(payout, PayoutStatus.REVERSED)

    @has_payouts
    @rule(data=st.data())
    def reinitiate(self, data: st.DataObject) -> None:
        payout_id, payout = self.pick(data, {PayoutStatus.FAILED})
        merchant_id = self.merchant_id

        async def work(session: AsyncSession) -> None:
            merchant = await session.get(Merchant, merchant_id)
            assert merchant is not None
            await reinitiate_payout(session, merchant, payout_id, request_id="prop-reinitiate")

        if payout.status is not PayoutStatus.FAILED:
            self.expect_refused(api_errors.InvalidStatus, work)
        elif self.perform(payout.amount <= self.available, api_errors.InsufficientBalance, work):
            self.available -= payout.amount
            self.held += payout.amount
            payout.status = PayoutStatus.PENDING
            payout.hold_cycle += 1

    @precondition(
        lambda machine: any(p.status in TERMINAL_STATUSES for p in machine.model.values())
    )
    @rule(data=st.data())
    def replay_settlement(self, data: st.DataObject) -> None:
        """Posting or releasing an already settled hold again (a replayed message that slipped
        past the status guard) is refused by the ledger itself."""
        payout_id, payout = self.pick(data, TERMINAL_STATUSES, only_legal=True)
        settle = ledger.RELEASE if payout.status is PayoutStatus.FAILED else ledger.PAYOUT
        merchant_id, amount, hold_cycle = self.merchant_id, payout.amount, payout.hold_cycle

        async def work(session: AsyncSession) -> None:
            await ledger.post(
                session,
                settle,
                merchant_id=merchant_id,
                payout_id=payout_id,
                hold_cycle=hold_cycle,
                amount=amount,
            )

        # The balance guard refuses it when `held` is too small, the unique journal key otherwise.
        self.expect_refused((IntegrityError, ledger.InsufficientBalance), work)

    @rule(amount=top_ups)
    def top_up(self, amount: Decimal) -> None:
        merchant_id = self.merchant_id

        async def work(session: AsyncSession) -> None:
            await ledger.top_up(session, merchant_id=merchant_id, amount=amount)

        self.in_transaction(work)
        self.available += amount

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def ledger_matches_the_model_and_the_contract(self) -> None:
        if not self.merchant_id:
            return
        facts = self.read(self.ledger_facts)
        assert facts.unbalanced_journals == []
        assert facts.balance == (self.available, self.held)
        assert facts.ledger_sums == (self.available, self.held)
        assert self.available >= 0 and self.held >= 0
        assert facts.in_flight == self.held
        assert facts.repeated_journals == []
        assert facts.settled_twice == []
        assert facts.last_line_after in (None, (self.available + self.held, self.available))
        assert facts.payouts == {
            payout_id: (payout.status.value, payout.hold_cycle)
            for payout_id, payout in self.model.items()
        }
        assert set(facts.reconcile) - self.known_problems == set()

    async def ledger_facts(self, session: AsyncSession) -> "LedgerFacts":
        merchant_id = self.merchant_id
        journals = LedgerJournal.merchant_id == merchant_id
        unbalanced = await session.execute(
            select(LedgerJournal.id)
            .join(LedgerLine, LedgerLine.journal_id == LedgerJournal.id)
            .where(journals)
            .group_by(LedgerJournal.id)
            .having((func.sum(LedgerLine.amount) != 0) | (func.count(LedgerLine.id) != 2))
        )
        per_account = await session.execute(
            select(LedgerLine.account, func.sum(LedgerLine.amount))
            .where(LedgerLine.merchant_id == merchant_id)
            .group_by(LedgerLine.account)
        )
        sums = {account: total for account, total in per_account}
        balance = await session.get(Balance, merchant_id)
        assert balance is not None
        in_flight = await session.scalar(
            select(func.coalesce(func.sum(Payout.amount), ZERO)).where(
                Payout.merchant_id == merchant_id,
                Payout.status.not_in([status.value for status in TERMINAL_STATUSES]),
            )
        )
        per_cycle = (LedgerJournal.payout_id, LedgerJournal.hold_cycle)
        repeated = await session.execute(
            select(*per_cycle, LedgerJournal.kind)
            .where(journals, LedgerJournal.payout_id.is_not(None))
            .group_by(*per_cycle, LedgerJournal.kind)
            .having(func.count() > 1)
        )
        settled_twice = await session.execute(
            select(*per_cycle)
            .where(
                journals,
                LedgerJournal.kind.in_(
                    [ledger.JournalKind.PAYOUT.value, ledger.JournalKind.RELEASE.value]
                ),
            )
            .group_by(*per_cycle)
            .having(func.count() > 1)
        )
        last_line = (
            await session.execute(
                select(LedgerLine.balance_after, LedgerLine.available_after)
                .where(LedgerLine.merchant_id == merchant_id)
                .order_by(LedgerLine.id.desc())
                .limit(1)
            )
        ).one_or_none()
        payouts = await session.execute(
            select(Payout.id, Payout.status, Payout.hold_cycle).where(
                Payout.merchant_id == merchant_id
            )
        )
        async with self.harness.sessions() as reconcile_session:
            problems = await reconcile(reconcile_session)
        return LedgerFacts(
            unbalanced_journals=list(unbalanced.scalars()),
            balance=(balance.available, balance.held),
            ledger_sums=(sums.get("AVAILABLE", ZERO), sums.get("HELD", ZERO)),
            in_flight=in_flight,
            repeated_journals=[tuple(row) for row in repeated],
            settled_twice=[tuple(row) for row in settled_twice],
            last_line_after=None if last_line is None else tuple(last_line),
            payouts={row.id: (row.status, row.hold_cycle) for row in payouts},
            reconcile=problems,
        )


@dataclass(frozen=True)
class LedgerFacts:
    unbalanced_journals: list[int]
    balance: tuple[Decimal, Decimal]
    ledger_sums: tuple[Decimal, Decimal]
    in_flight: Decimal | None
    repeated_journals: list[tuple[Any, ...]]
    settled_twice: list[tuple[Any, ...]]
    last_line_after: tuple[Any, ...] | None
    payouts: dict[str, tuple[str, int]]
    reconcile: list[str]


async def count(session: AsyncSession, statement: Any) -> int:
    return int(await session.scalar(statement) or 0)


async def reconcile_findings(sessions: SessionFactory) -> frozenset[str]:
    async with sessions() as session:
        return frozenset(await reconcile(session))


STATEFUL_EXAMPLES = int(os.environ.get("STATEFUL_EXAMPLES", "10"))


async def test_ledger_invariants_hold_under_random_operations(
    sessions: SessionFactory, make_merchant: MerchantFactory
) -> None:
    harness = Harness(asyncio.get_running_loop(), sessions, make_merchant)
    machine = type("BoundLedgerMachine", (LedgerMachine,), {"harness": harness})
    await asyncio.to_thread(
        run_state_machine_as_test,
        machine,
        settings=settings(
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
