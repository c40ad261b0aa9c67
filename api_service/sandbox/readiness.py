"""The go-live readiness report (GET /sandbox/readiness): a checklist computed from what the
merchant actually did in the sandbox. Each item is passed, failed or not yet tried, with the
evidence. The facts are read here (a handful of indexed queries); judging them is pure.
"""

import bisect
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ColumnElement,
    SQLColumnExpression,
    and_,
    case,
    func,
    select,
    true,
    tuple_,
    union,
)
from sqlalchemy.ext.asyncio import AsyncSession

from api_service.idempotency import canonical_key
from api_service.sandbox.faults import FaultKind
from contracts.db.models import (
    ApiRequestRecord,
    LedgerJournal,
    Merchant,
    Payout,
    PayoutEvent,
    WebhookAttempt,
    WebhookDelivery,
)
from contracts.domain.scenarios import REVIEW_THRESHOLD, SCRIPTS, SUFFIX_RULES, Outcome
from contracts.domain.statuses import TERMINAL_STATUSES, EventType, FailureCode, PayoutStatus
from contracts.ledger import JournalKind
from contracts.webhook_chaos import SENT_CLEAN, ChaosKind
from contracts.webhooks import DeliveryStatus
from contracts.wire import format_timestamp

FINAL_STATUSES = TERMINAL_STATUSES
# A long history (a load test of 150,000 payouts) is judged on its latest payouts and what came
# since the oldest of them: reading all of it took 4 to 8 s at each view (scale review).
LATEST_PAYOUTS_JUDGED = 10_000
WEBHOOK_DEADLINE_MS = 10_000
MIN_WEBHOOK_ATTEMPTS = 5
# A retry this much early still counts as waiting (clocks and rounding).
RETRY_AFTER_TOLERANCE = timedelta(milliseconds=100)


class Verdict(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    NOT_TRIED = "not_tried"


@dataclass(frozen=True)
class Item:
    id: str
    title: str
    verdict: Verdict
    evidence: str

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "status": self.verdict.value,
            "evidence": self.evidence,
        }


# ---- scenarios -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ScenarioCount:
    scenario: str  # "in_review" or an account suffix
    status: str
    count: int
    # Of these payouts, those reinitiated after their scenario ran: every cycle before a
    # reinitiation ended FAILED, and the scenario's event came before it (not a payout expired
    # in the queue, nor one failed by a simulated outcome before the processor took it).
    reinitiated: int = 0
    # Whether these payouts showed their scenario's event (IN_REVIEW, or SUFFIX_EVENTS): an
    # outcome the PSP sent before the processor took the payout wins over its scenario, and one
    # of 100,000 simulated SUCCESS then was "seen through review".
    seen: bool = True


# Where a scripted scenario ends: the status its last step leaves (0006 SUCCESS is not the end).
_SCRIPT_END = {
    Outcome.SUCCESS: PayoutStatus.SUCCESS,
    Outcome.FAILED: PayoutStatus.FAILED,
    Outcome.REVERSED: PayoutStatus.REVERSED,
}


def final_statuses(scenario: str) -> frozenset[PayoutStatus]:
    """Where the scenario ends: a script at its last step's status, a failing rule (0003) at
    FAILED (it ended SUCCESS only when the PSP's outcome came before it, and it never ran)."""
    script = SCRIPTS.get(scenario)
    if script is not None:
        return frozenset({_SCRIPT_END[script[-1].decision.outcome]})
    rule = SUFFIX_RULES.get(scenario)
    if rule is not None and rule.outcome is Outcome.FAILED:
        return frozenset({PayoutStatus.FAILED})
    return FINAL_STATUSES


def scenario_items(counts: Sequence[ScenarioCount]) -> list[Item]:
    items = []
    for scenario in ("in_review", *SUFFIX_RULES, *SCRIPTS):
        mine = [count for count in counts if count.scenario == scenario]
        created = sum(count.count for count in mine)
        finals = final_statuses(scenario)
        seen = [count for count in mine if count.seen]
        final = sum(count.count for count in seen if count.status in finals)
        if PayoutStatus.FAILED in finals:  # a reinitiated payout reached it before, and ended
            final += sum(count.reinitiated for count in seen if count.status not in finals)
        title = (
            f"A payout of {REVIEW_THRESHOLD:,} or more seen through review to its final status"
            if scenario == "in_review"
            else f"A payout to an account ending {scenario} seen to its final status"
        )
        if final:
            verdict, evidence = Verdict.PASSED, f"{final} of {created} final"
        else:
            verdict = Verdict.NOT_TRIED
            evidence = f"{created} created, none final yet" if created else "none yet"
        items.append(Item(f"scenario_{scenario}", title, verdict, evidence))
    return items


# ---- the merchant's calls ------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    id: int
    method: str
    path: str
    status: int | None
    idempotency_key: str | None
    fault: str | None
    lost_status: int | None  # the status timeout-after-commit hid
    retry_after_seconds: int | None
    started_at: datetime
    latency_ms: int
    body_digest: str | None  # of the request body as sent

    @property
    def wrote_nothing(self) -> bool:
        """Its answer, hidden by timeout-after-commit, was a refusal (unknown for a call logged
        before migration 0030, taken as a write)."""
        return self.lost_status is not None and not 200 <= self.lost_status < 300

    @property
    def ended_at(self) -> datetime:
        return self.started_at + timedelta(milliseconds=self.latency_ms)

    @property
    def order(self) -> tuple[datetime, int]:
        """When it started: a call's row is written once it ends, so under load a slow call's
        row can come after the rows of the calls that followed it."""
        return self.started_at, self.id


class NextCalls:
    """The merchant's next call of the same request as a given call (method, path and body: its
    retry, if it retried), each found by bisection, not by a scan of every call. Another request
    sent meanwhile (another create, by another worker) is not a retry, whatever its key; nor is
    a later request that reuses the key with another body."""

    def __init__(self, calls: Sequence[Call]) -> None:
        self._by_request: dict[tuple[str, str, str | None], list[Call]] = {}
        for call in sorted(calls, key=lambda c: c.order):
            self._by_request.setdefault(_request_of(call), []).append(call)

    def after(self, call: Call) -> Call | None:
        same = self._by_request.get(_request_of(call), [])
        index = bisect.bisect_right(same, call.order, key=lambda c: c.order)
        return same[index] if index < len(same) else None


def _request_of(call: Call) -> tuple[str, str, str | None]:
    return call.method, call.path, call.body_digest


def _same_key(retried: str, lost: str | None) -> bool:
    """One key however it is written (upper case, in braces...), as the API reads it: the same
    key written otherwise was "a new key"."""
    return lost is not None and canonical_key(retried) == canonical_key(lost)


def timeout_retry_item(calls: Sequence[Call]) -> Item:
    """After `timeout-after-commit`, the retry must reuse the idempotency key (a request sent
    without a key, then again without one, reused none)."""
    retries: Counter[str] = Counter()
    refused = 0
    next_calls = NextCalls(calls)
    for call in calls:
        if call.fault != FaultKind.TIMEOUT_AFTER_COMMIT or call.method != "POST":
            continue
        if call.wrote_nothing:  # the retry of a request that wrote nothing proves nothing
            refused += 1
            continue
        retry = next_calls.after(call)
        if retry is None:
            continue
        if retry.idempotency_key is None:
            retries["sent no key"] += 1
        elif _same_key(retry.idempotency_key, call.idempotency_key):
            retries["alike"] += 1
        else:
            retries["sent a new key"] += 1
    title = "A request retried after timeout-after-commit reused its idempotency key"
    careless = [(what, count) for what, count in sorted(retries.items()) if what != "alike"]
    if careless:
        evidence = ", ".join(
            f"{count} retr{'y' if count == 1 else 'ies'} {what}" for what, count in careless
        )
        return Item("timeout_retry_same_key", title, Verdict.FAILED, evidence)
    if retries["alike"]:
        evidence = f"{retries['alike']} retried alike"
        return Item("timeout_retry_same_key", title, Verdict.PASSED, evidence)
    evidence = "no retry after an X-Sandbox-Fault: timeout-after-commit yet"
    if refused:
        evidence += (
            f" ({refused} such request{'' if refused == 1 else 's'} refused behind the fault: "
            "nothing was written, so a retry proves nothing)"
        )
    return Item("timeout_retry_same_key", title, Verdict.NOT_TRIED, evidence)


def retry_after_item(calls: Sequence[Call]) -> Item:
    """After a 429, no retry before its Retry-After."""
    honoured = early = 0
    next_calls = NextCalls(calls)
    for call in calls:
        if call.status != 429 or call.retry_after_seconds is None:
            continue
        retry = next_calls.after(call)
        if retry is None:
            continue
        waited = retry.started_at - call.ended_at
        if waited + RETRY_AFTER_TOLERANCE >= timedelta(seconds=call.retry_after_seconds):
            honoured += 1
        else:
            early += 1
    title = "429 answers honoured: no retry before Retry-After"
    if early:
        return Item("retry_after_honoured", title, Verdict.FAILED, f"{early} retried too early")
    if honoured:
        evidence = f"{honoured} retr{'y' if honoured == 1 else 'ies'} waited"
        return Item("retry_after_honoured", title, Verdict.PASSED, evidence)
    evidence = "no retry after a 429 yet (try X-Sandbox-Fault: status=429)"
    return Item("retry_after_honoured", title, Verdict.NOT_TRIED, evidence)


# ---- webhooks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answers:
    """How many webhook attempts the merchant's endpoint answered alike: with or without a 2xx,
    within the deadline or not, under the same sandbox chaos (None: none)."""

    chaos: str | None
    accepted: bool
    in_time: bool
    count: int
    answered: bool = True  # False: no HTTP answer at all (a timeout, a refused connection)
    delivered: bool = True  # the event's delivery ended in a 2xx (of a later, clean attempt)


def _counted(answers: Sequence[Answers]) -> int:
    return sum(answer.count for answer in answers)


def endpoint_speed_item(answers: Sequence[Answers]) -> Item:
    # Chaos's mangled attempts are not the endpoint's speed; those it sent clean are (counted
    # out, a merchant with a chaos delay never had this item tried).
    plain = [a for a in answers if a.chaos is None or a.chaos in SENT_CLEAN]
    title = "The webhook endpoint answers 2xx within 10 s, at p95"
    attempts = _counted(plain)
    if attempts < MIN_WEBHOOK_ATTEMPTS:
        evidence = f"{attempts} attempts so far; {MIN_WEBHOOK_ATTEMPTS} needed"
        return Item("webhook_endpoint_fast", title, Verdict.NOT_TRIED, evidence)
    good = _counted([a for a in plain if a.accepted and a.in_time])
    share = good / attempts
    verdict = Verdict.PASSED if share >= 0.95 else Verdict.FAILED
    percent = math.floor(share * 1000) / 10  # rounded down: 94.6 % of a failure read "(95%)"
    evidence = f"{good} of {attempts} attempts ({percent:g}%) answered 2xx within 10 s"
    return Item("webhook_endpoint_fast", title, verdict, evidence)


def chaos_item(
    answers: Sequence[Answers], kind: ChaosKind, *, item_id: str, title: str, must_accept: bool
) -> Item:
    # A refusal counts where the endpoint then accepted the event's clean attempt: one that
    # answers every webhook 500 (or never answers) has not shown that it refuses what it must
    # refuse, and passed both refusal items.
    judged = [
        a
        for a in answers
        if a.chaos == kind and (must_accept or a.accepted or (a.answered and a.delivered))
    ]
    deliveries = _counted(judged)
    if not deliveries:
        refused = "" if must_accept else " refused and then accepted clean"
        evidence = f"no {kind.value} delivery{refused} yet (PUT /sandbox/webhook-chaos)"
        return Item(item_id, title, Verdict.NOT_TRIED, evidence)
    wrong = _counted([a for a in judged if a.accepted != must_accept])
    verdict = Verdict.FAILED if wrong else Verdict.PASSED
    answered = "refused" if must_accept else "accepted (2xx)"
    evidence = (
        f"{wrong} of {deliveries} {kind.value} deliveries {answered}"
        if wrong
        else f"all {deliveries} {kind.value} deliveries answered right"
    )
    return Item(item_id, title, verdict, evidence)


def webhook_items(answers: Sequence[Answers]) -> list[Item]:
    return [
        endpoint_speed_item(answers),
        chaos_item(
            answers,
            ChaosKind.DUPLICATE,
            item_id="duplicates_accepted",
            title="Duplicate deliveries (same webhook-id) answered 2xx",
            must_accept=True,
        ),
        chaos_item(
            answers,
            ChaosKind.STALE_TIMESTAMP,
            item_id="stale_timestamp_refused",
            title="Deliveries with a stale webhook-timestamp refused (non-2xx)",
            must_accept=False,
        ),
        chaos_item(
            answers,
            ChaosKind.OLD_SECRET,
            item_id="wrong_signature_refused",
            title="Deliveries signed with a wrong (rotated-out) secret refused (non-2xx)",
            must_accept=False,
        ),
    ]


def flow_item(item_id: str, title: str, seen: int, what: str, hint: str) -> Item:
    if seen:
        return Item(item_id, title, Verdict.PASSED, f"{seen} {what}")
    return Item(item_id, title, Verdict.NOT_TRIED, hint)


def summary(items: Sequence[Item]) -> dict[str, Any]:
    counts = {verdict: sum(item.verdict is verdict for item in items) for verdict in Verdict}
    return {
        "ready": counts[Verdict.PASSED] == len(items),
        "passed": counts[Verdict.PASSED],
        "failed": counts[Verdict.FAILED],
        "notTried": counts[Verdict.NOT_TRIED],
    }


# ---- reading the facts ---------------------------------------------------------------------


async def readiness_report(session: AsyncSession, merchant_id: str) -> dict[str, Any]:
    """The report of what the merchant did since its readiness run started (its latest
    restart: payouts created, webhooks made with their attempts, API calls started since; or
    all), or since its latest LATEST_PAYOUTS_JUDGED payouts' oldest, if later."""
    since, cut_short = await _judged_since(session, merchant_id)
    counts = await _scenario_counts(session, merchant_id, since)
    items = [
        *scenario_items(counts),
        flow_item(
            "reversal_received",
            "A reversal received (payout.reversed delivered to your endpoint)",
            await _reversals_delivered(session, merchant_id, since),
            "payout.reversed webhooks delivered",
            "none yet: reverse a SUCCESS payout with POST /sandbox/payouts/{id}/simulate",
        ),
        flow_item(
            "reinitiate_done",
            "A FAILED payout reinitiated",
            await _reinitiations(session, merchant_id, since),
            "reinitiations",
            "none yet: POST /payouts/{id}/reinitiate on a FAILED payout",
        ),
    ]
    calls = await calls_with_their_retries(session, merchant_id, since)
    items += [timeout_retry_item(calls), retry_after_item(calls)]
    items += webhook_items(await _answers(session, merchant_id, since))
    return {
        "items": [item.json() for item in items],
        "summary": summary(items),
        "since": None if since is None else format_timestamp(since),
        "limitedToLatestPayouts": LATEST_PAYOUTS_JUDGED if cut_short else None,
    }


async def _judged_since(session: AsyncSession, merchant_id: str) -> tuple[datetime | None, bool]:
    """Where the report starts: where the readiness run did (its latest restart; None: at the
    beginning), or later, at the run's LATEST_PAYOUTS_JUDGED-th newest payout when it holds more
    (True), read through ix_payouts_merchant_created."""
    run_since = await session.scalar(
        select(Merchant.readiness_since).where(Merchant.id == merchant_id)
    )
    # The oldest judged, and one more if the run holds more (exactly as many: judged whole).
    oldest_judged = list(
        await session.scalars(
            select(Payout.created_at)
            .where(Payout.merchant_id == merchant_id, _from(Payout.created_at, run_since))
            .order_by(Payout.created_at.desc())
            .offset(LATEST_PAYOUTS_JUDGED - 1)
            .limit(2)
        )
    )
    return (oldest_judged[0], True) if len(oldest_judged) == 2 else (run_since, False)


def _from(column: SQLColumnExpression[datetime], since: datetime | None) -> ColumnElement[bool]:
    """The rows of the readiness run: `column` at or after its start."""
    return true() if since is None else column >= since


# The event that shows a payout's scenario ran: the status it leads to before its final one (a
# script's first step's), else payout.processing (the processor took the payout). An outcome
# simulated or sent before the processor took the payout skips its scenario, and shows neither.
_OWN_STATUS_EVENTS = {
    Outcome.RETRY: EventType.RETRYING,
    Outcome.PENDING_AT_PSP: EventType.PENDING,
    Outcome.ON_HOLD: EventType.ON_HOLD,
}
_FIRST_DECISIONS = {
    **SUFFIX_RULES,
    **{suffix: script[0].decision for suffix, script in SCRIPTS.items()},
}
SUFFIX_EVENTS = {
    suffix: _OWN_STATUS_EVENTS.get(decision.outcome, EventType.PROCESSING)
    for suffix, decision in _FIRST_DECISIONS.items()
}


async def _scenario_counts(
    session: AsyncSession, merchant_id: str, since: datetime | None
) -> list[ScenarioCount]:
    in_review = Payout.amount >= REVIEW_THRESHOLD
    suffix = func.right(Payout.account_number, 4)
    scenario_event = case(
        (in_review, EventType.IN_REVIEW.value),
        *((suffix == scenario, event.value) for scenario, event in SUFFIX_EVENTS.items()),
        else_=EventType.PROCESSING.value,
    )
    shown = select(PayoutEvent.id).where(  # ix_events_payout_type_time
        PayoutEvent.payout_id == Payout.id, PayoutEvent.type == scenario_event
    )
    last_reinitiated = (
        select(func.max(PayoutEvent.created_at))
        .where(PayoutEvent.payout_id == Payout.id, PayoutEvent.type == EventType.REINITIATED.value)
        .correlate(Payout)  # inside a read of payout_events: its own, not that one's rows
        .scalar_subquery()
    )
    # Its scenario ran in a cycle before its last reinitiation: every such cycle ended FAILED.
    ran_before_reinitiated = and_(
        Payout.hold_cycle > 1, shown.where(PayoutEvent.created_at < last_reinitiated).exists()
    )
    seen = shown.exists()
    rows = await session.execute(
        select(
            in_review,
            suffix,
            Payout.status,
            func.count(),
            func.sum(case((ran_before_reinitiated, 1), else_=0)),
            # As grouped, in an aggregate: MySQL 8 matches a subquery of the select list to the
            # GROUP BY's by name alone, and refused the read under ONLY_FULL_GROUP_BY (1055).
            func.max(seen),
        )
        .where(
            Payout.merchant_id == merchant_id,
            _from(Payout.created_at, since),
            # Queued and expired before it started: no scenario of it ever ran.
            func.coalesce(Payout.failure_code, "") != FailureCode.QUEUE_EXPIRED,
        )
        .group_by(in_review, suffix, Payout.status, seen)
    )
    return [
        ScenarioCount(
            "in_review" if review else account_suffix,
            status,
            int(count),
            int(reinitiated),
            bool(was_seen),
        )
        for review, account_suffix, status, count, reinitiated, was_seen in rows
    ]


async def _reinitiations(session: AsyncSession, merchant_id: str, since: datetime | None) -> int:
    """Reinitiations made in the run, of payouts created whenever: the HOLD journal of each hold
    cycle after a payout's first (ix_journals_merchant_kind).
    Counted on the payouts created in the run, a reinitiation after a restart of a payout that
    failed before it was not counted, and the item's hint asked for what had just been done."""
    return await _counted_through_payouts(
        session,
        merchant_id,
        LedgerJournal,
        LedgerJournal.kind == JournalKind.HOLD.value,
        LedgerJournal.hold_cycle > 1,
        _from(LedgerJournal.created_at, since),
    )


async def _reversals_delivered(
    session: AsyncSession, merchant_id: str, since: datetime | None
) -> int:
    """payout.reversed webhooks delivered: the merchant's deliveries of that event since the run
    started (ix_deliveries_merchant_event), each of a REVERSED payout, not a read of every
    delivery of its REVERSED payouts."""
    return await _counted_through_payouts(
        session,
        merchant_id,
        WebhookDelivery,
        Payout.status == PayoutStatus.REVERSED.value,
        WebhookDelivery.event_type == EventType.REVERSED.value,
        _from(WebhookDelivery.created_at, since),
        # Delivered once: a resend since (PENDING again, then perhaps failing) keeps it.
        WebhookDelivery.delivered_at.is_not(None),
    )


async def _counted_through_payouts(
    session: AsyncSession,
    merchant_id: str,
    rows: type[LedgerJournal] | type[WebhookDelivery],
    *conditions: ColumnElement[bool],
) -> int:
    """How many `rows` of the merchant's payouts (by their payout_id) meet `conditions`: found
    by the merchant's own index on `rows` (it is the payout's merchant, copied), each payout then
    read by its key, not by a read of every `rows` of each of the merchant's payouts."""
    query = select(func.count()).select_from(rows).join(Payout, Payout.id == rows.payout_id)
    mine = and_(rows.merchant_id == merchant_id, Payout.merchant_id == merchant_id)
    return int(await session.scalar(query.where(mine, *conditions)) or 0)


# Rows logged before migration 0021: the digest of the body as recorded (masked).
_BODY_DIGEST = func.coalesce(
    ApiRequestRecord.request_digest, func.md5(ApiRequestRecord.request_body)
)
_CALL_COLUMNS = (
    ApiRequestRecord.id,
    ApiRequestRecord.method,
    ApiRequestRecord.path,
    ApiRequestRecord.status,
    ApiRequestRecord.idempotency_key,
    ApiRequestRecord.fault,
    ApiRequestRecord.lost_status,
    ApiRequestRecord.retry_after_seconds,
    ApiRequestRecord.started_at,
    ApiRequestRecord.latency_ms,
    _BODY_DIGEST.label("body_digest"),
)
# The calls timeout_retry_item and retry_after_item judge the retries of: each kind read by an
# index of its own (ix_api_requests_merchant_fault, ix_api_requests_merchant_status), for one
# condition of both read every call of the merchant.
_EVIDENCE = (
    and_(
        ApiRequestRecord.fault == FaultKind.TIMEOUT_AFTER_COMMIT.value,
        ApiRequestRecord.method == "POST",
    ),
    and_(ApiRequestRecord.status == 429, ApiRequestRecord.retry_after_seconds.is_not(None)),
)


async def calls_with_their_retries(
    session: AsyncSession, merchant_id: str, since: datetime | None
) -> list[Call]:
    """The calls that can carry evidence (an injected timeout-after-commit, a 429 with its
    Retry-After) and every call of the same request (method, path and body) since the first of
    them: where a retry of each is found. Nothing more: a busy merchant makes tens of thousands
    of calls, and every call to the same path since one lost answer (a week of creates) was
    read and sorted here, holding up the API's other requests for seconds."""
    mine = and_(
        ApiRequestRecord.merchant_id == merchant_id, _from(ApiRequestRecord.started_at, since)
    )
    of_each_kind = (select(*_CALL_COLUMNS).where(mine, kind) for kind in _EVIDENCE)
    evidence = [Call(**row._mapping) for row in await session.execute(union(*of_each_kind))]
    requests = sorted({_request_of(call) for call in evidence if call.body_digest is not None})
    if not requests:
        return evidence
    first = min(call.started_at for call in evidence)
    rows = await session.execute(
        select(*_CALL_COLUMNS).where(
            mine,
            ApiRequestRecord.started_at >= first,
            tuple_(ApiRequestRecord.method, ApiRequestRecord.path, _BODY_DIGEST).in_(requests),
        )
    )
    followers = [Call(**row._mapping) for row in rows]
    return sorted({call.id: call for call in [*evidence, *followers]}.values(), key=lambda c: c.id)


async def _answers(
    session: AsyncSession, merchant_id: str, since: datetime | None
) -> list[Answers]:
    """Counted by the database: a busy merchant has tens of thousands of attempts."""
    accepted = func.coalesce(WebhookAttempt.status_code.between(200, 299), False)
    in_time = WebhookAttempt.latency_ms <= WEBHOOK_DEADLINE_MS
    answered = WebhookAttempt.status_code.is_not(None)
    delivered = WebhookDelivery.status == DeliveryStatus.DELIVERED.value
    rows = await session.execute(
        select(WebhookAttempt.chaos, accepted, in_time, func.count(), answered, delivered)
        .join(WebhookDelivery, WebhookDelivery.id == WebhookAttempt.delivery_id)
        .where(
            WebhookDelivery.merchant_id == merchant_id,
            # The webhooks made in the run, attempted in it: a range of
            # ix_deliveries_merchant_created_status, not every delivery of the merchant's.
            _from(WebhookDelivery.created_at, since),
            _from(WebhookAttempt.created_at, since),
        )
        .group_by(WebhookAttempt.chaos, accepted, in_time, answered, delivered)
    )
    return [
        Answers(chaos, bool(accepted_2xx), bool(fast), int(count), bool(any_answer), bool(done))
        for chaos, accepted_2xx, fast, count, any_answer, done in rows
    ]
