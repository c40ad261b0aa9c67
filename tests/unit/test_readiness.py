"""Judging the go-live readiness items from the facts (api_service.sandbox.readiness)."""

from datetime import UTC, datetime, timedelta

import pytest

from api_service.sandbox.readiness import (
    WEBHOOK_DEADLINE_MS,
    Answers,
    Call,
    ScenarioCount,
    Verdict,
    endpoint_speed_item,
    retry_after_item,
    scenario_items,
    summary,
    timeout_retry_item,
    webhook_items,
)
from contracts.webhook_chaos import ChaosKind

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def answer(status: int | None, latency_ms: int, chaos: ChaosKind | None) -> Answers:
    """One attempt, as the database counts them."""
    accepted = status is not None and 200 <= status < 300
    return Answers(chaos, accepted, latency_ms <= WEBHOOK_DEADLINE_MS, 1, status is not None)


def call(
    id: int,
    *,
    at: float,
    key: str | None = None,
    fault: str | None = None,
    status: int | None = 201,
    lost: int | None = None,
    retry_after: int | None = None,
    path: str = "/api/v1/payouts",
    body: str = "payout A",
) -> Call:
    started = T0 + timedelta(seconds=at)
    return Call(id, "POST", path, status, key, fault, lost, retry_after, started, 10, body)


def test_a_scenario_passes_once_a_payout_of_it_is_final() -> None:
    counts = [
        ScenarioCount("0001", "SUCCESS", 1),
        ScenarioCount("0001", "PENDING", 1),
        ScenarioCount("0004", "PENDING", 1),
        ScenarioCount("0006", "SUCCESS", 2),  # its script ends REVERSED, 48 h later
        ScenarioCount("0009", "FAILED", 1),
    ]
    items = {item.id: item for item in scenario_items(counts)}
    suffixes = ("in_review", "0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009")
    assert list(items) == [f"scenario_{suffix}" for suffix in suffixes]
    assert items["scenario_0001"].verdict is Verdict.PASSED
    assert items["scenario_0001"].evidence == "1 of 2 final"
    assert items["scenario_0004"].verdict is Verdict.NOT_TRIED
    assert "1 created, none final" in items["scenario_0004"].evidence
    assert items["scenario_0006"].verdict is Verdict.NOT_TRIED
    assert items["scenario_0009"].verdict is Verdict.PASSED
    assert items["scenario_0002"].evidence == "none yet"


def test_a_scenario_an_earlier_psp_outcome_skipped_is_not_passed() -> None:
    """Final, but by the PSP's outcome: 0003 ended SUCCESS without failing; 0005 never showed
    its hold, nor the payout of 100,000 its review (`seen`: their events say so)."""
    counts = [
        ScenarioCount("0003", "SUCCESS", 1),
        ScenarioCount("0005", "SUCCESS", 1, seen=False),
        ScenarioCount("in_review", "FAILED", 2, seen=False),
        ScenarioCount("in_review", "SUCCESS", 1),
    ]
    items = {item.id: item for item in scenario_items(counts)}
    assert items["scenario_0003"].verdict is Verdict.NOT_TRIED
    assert items["scenario_0005"].verdict is Verdict.NOT_TRIED
    assert (items["scenario_in_review"].verdict, items["scenario_in_review"].evidence) == (
        Verdict.PASSED,
        "1 of 3 final",
    )


def test_a_scenario_ending_failed_stays_passed_once_its_payout_is_reinitiated() -> None:
    """Reinitiating a FAILED payout (the report's own hint) put its scenario back to "not tried"
    until its script ran again: a reinitiated payout was FAILED, the end of those scenarios."""
    counts = [
        ScenarioCount("0003", "PENDING", 1, reinitiated=1),
        ScenarioCount("0009", "RETRY", 1, reinitiated=1),
        ScenarioCount("0006", "PENDING", 1, reinitiated=1),  # ends REVERSED
    ]
    items = {item.id: item for item in scenario_items(counts)}
    assert (items["scenario_0003"].verdict, items["scenario_0003"].evidence) == (
        Verdict.PASSED,
        "1 of 1 final",
    )
    assert items["scenario_0009"].verdict is Verdict.PASSED
    assert items["scenario_0006"].verdict is Verdict.NOT_TRIED


def test_a_timeout_retried_with_its_key_passes_and_with_a_new_key_fails() -> None:
    lost = call(1, at=0, key="k1", fault="timeout-after-commit", status=504)
    assert timeout_retry_item([lost]).verdict is Verdict.NOT_TRIED
    assert timeout_retry_item([lost, call(2, at=1, key="k1")]).verdict is Verdict.PASSED
    careless = timeout_retry_item([lost, call(2, at=1, key="k2")])
    assert careless.verdict is Verdict.FAILED
    assert careless.evidence == "1 retry sent a new key"
    # A call elsewhere in between is not the retry.
    other = call(2, at=0.5, key="x", path="/api/v1/balance")
    assert timeout_retry_item([lost, other, call(3, at=1, key="k1")]).verdict is Verdict.PASSED
    # The lost call's row written after its retry's and a later create's (under load): the
    # retry is the call that started next.
    late_row = call(9, at=0, key="k1", fault="timeout-after-commit", status=504)
    rows = [call(7, at=1, key="k1"), call(8, at=2, key="k3"), late_row]
    assert timeout_retry_item(rows).verdict is Verdict.PASSED


def test_a_timeout_retried_with_its_key_written_otherwise_passes() -> None:
    """The API reads one key however it is written (upper case, braces, urn:uuid:, 32 digits);
    the report read the same key written otherwise as a new one."""
    key = "0b7d51a6-94c4-4a53-9a51-f3a6b7a0c0de"
    lost = call(1, at=0, key=key, fault="timeout-after-commit", status=504)
    for written in (key.upper(), f"{{{key}}}", f"urn:uuid:{key}", key.replace("-", "")):
        retried = timeout_retry_item([lost, call(2, at=1, key=written)])
        assert retried.verdict is Verdict.PASSED, written


def test_a_timeout_retried_without_any_key_reused_none() -> None:
    """Sent without a key, then again without one: None == None read as "retried alike"."""
    lost = call(1, at=0, fault="timeout-after-commit", status=504)
    keyless = timeout_retry_item([lost, call(2, at=1, status=400)])
    assert (keyless.verdict, keyless.evidence) == (Verdict.FAILED, "1 retry sent no key")
    lost_again = call(3, at=2, key="k1", fault="timeout-after-commit", status=504)
    both = timeout_retry_item([lost, call(2, at=1), lost_again, call(4, at=3, key="k2")])
    assert both.evidence == "1 retry sent a new key, 1 retry sent no key"


def test_the_retry_of_a_request_refused_behind_the_timeout_proves_nothing() -> None:
    """The fault hid a 400 (nothing written) behind its 504: a retry with the same key passed
    "reused its idempotency key" though no write was at stake. A row logged before the status
    was kept (None) is still taken as a write."""
    refused = call(1, at=0, key="k1", fault="timeout-after-commit", status=504, lost=400)
    item = timeout_retry_item([refused, call(2, at=1, key="k1", status=400)])
    assert item.verdict is Verdict.NOT_TRIED
    assert "1 such request refused behind the fault" in item.evidence
    written = call(3, at=2, key="k3", fault="timeout-after-commit", status=504, lost=201)
    both = [refused, call(2, at=1, key="k1"), written, call(4, at=3, key="k3")]
    assert timeout_retry_item(both).verdict is Verdict.PASSED
    careless = [*both[:3], call(4, at=3, key="k4")]
    assert timeout_retry_item(careless).verdict is Verdict.FAILED


def test_another_request_is_not_the_retry_of_a_timed_out_one() -> None:
    """A concurrent client: another create (its own key and body) sent while the lost one ran, or
    between it and its retry, is not its retry; nor is a later create that reuses one key for
    every request (422 IDEMPOTENCY_KEY_REUSED), which does not retry alike."""
    lost = call(1, at=0, key="k1", fault="timeout-after-commit", status=504)
    other = call(2, at=0.5, key="k2", body="payout B")
    retry = call(3, at=1, key="k1")
    assert timeout_retry_item([lost, other, retry]).verdict is Verdict.PASSED
    reused = call(2, at=0.5, key="k1", body="payout B", status=422)
    assert timeout_retry_item([lost, reused]).verdict is Verdict.NOT_TRIED
    assert timeout_retry_item([lost, reused, call(3, at=1, key="k9")]).verdict is Verdict.FAILED


def test_a_retry_before_retry_after_fails_the_429_item() -> None:
    limited = call(1, at=0, status=429, retry_after=2)
    assert retry_after_item([limited]).verdict is Verdict.NOT_TRIED
    assert retry_after_item([limited, call(2, at=2.05)]).verdict is Verdict.PASSED
    assert retry_after_item([limited, call(2, at=0.5)]).verdict is Verdict.FAILED
    # Other requests sent meanwhile (a merchant-wide 429 share under load) are not its retry.
    others = [call(2 + n, at=0.1 * n, body=f"payout {n}") for n in range(1, 5)]
    assert retry_after_item([limited, *others, call(9, at=2.1)]).verdict is Verdict.PASSED


def test_the_endpoint_must_answer_2xx_within_10_s_at_p95() -> None:
    fast = [answer(200, 50, None)] * 19
    assert endpoint_speed_item(fast[:4]).verdict is Verdict.NOT_TRIED
    assert endpoint_speed_item([*fast, answer(500, 50, None)]).verdict is Verdict.PASSED
    slow = [*fast[:18], answer(200, 10_001, None), answer(None, 10_000, None)]
    assert endpoint_speed_item(slow).verdict is Verdict.FAILED
    # Chaos's mangled attempts are not the endpoint's speed.
    refused = [answer(401, 5, ChaosKind.STALE_TIMESTAMP)] * 10
    assert endpoint_speed_item([*fast, *refused]).verdict is Verdict.PASSED


@pytest.mark.parametrize("kind", [ChaosKind.DELAYED, ChaosKind.OUT_OF_ORDER, ChaosKind.DUPLICATE])
def test_attempts_chaos_sent_clean_are_the_endpoints_speed(kind: ChaosKind) -> None:
    """With a chaos delay every attempt is labelled `delayed`: the item was never tried ("0
    attempts so far"), though each was a real call answered."""
    item = endpoint_speed_item([answer(200, 5, kind)] * 9)
    assert (item.verdict, item.evidence) == (
        Verdict.PASSED,
        "9 of 9 attempts (100%) answered 2xx within 10 s",
    )


def test_a_failed_p95_does_not_read_95_percent() -> None:
    item = endpoint_speed_item([answer(200, 5, None)] * 53 + [answer(500, 5, None)] * 3)
    assert (item.verdict, item.evidence) == (
        Verdict.FAILED,
        "53 of 56 attempts (94.6%) answered 2xx within 10 s",
    )


def test_chaos_deliveries_must_be_answered_as_a_careful_receiver_answers() -> None:
    careful = [
        answer(200, 5, ChaosKind.DUPLICATE),
        answer(401, 5, ChaosKind.STALE_TIMESTAMP),
        answer(401, 5, ChaosKind.OLD_SECRET),
    ]
    careless = [
        answer(500, 5, ChaosKind.DUPLICATE),
        answer(200, 5, ChaosKind.STALE_TIMESTAMP),
        answer(200, 5, ChaosKind.OLD_SECRET),
    ]
    verdicts = {item.id: item.verdict for item in webhook_items(careful)}
    assert verdicts == {
        "webhook_endpoint_fast": Verdict.NOT_TRIED,
        "duplicates_accepted": Verdict.PASSED,
        "stale_timestamp_refused": Verdict.PASSED,
        "wrong_signature_refused": Verdict.PASSED,
    }
    assert [item.verdict for item in webhook_items(careless)][1:] == [Verdict.FAILED] * 3


def test_ready_only_when_every_item_passed() -> None:
    items = webhook_items([answer(200, 5, ChaosKind.DUPLICATE)])
    assert summary(items) == {"ready": False, "passed": 1, "failed": 0, "notTried": 3}


def test_attempts_are_weighed_by_how_many_the_database_counted() -> None:
    counted = [Answers(None, True, True, 19), Answers(None, False, True, 2)]
    item = endpoint_speed_item(counted)
    assert (item.verdict, item.evidence) == (
        Verdict.FAILED,
        "19 of 21 attempts (90.4%) answered 2xx within 10 s",
    )
    duplicates = [
        Answers(ChaosKind.DUPLICATE, True, True, 3),
        Answers(ChaosKind.DUPLICATE, False, True, 2),
    ]
    assert webhook_items(duplicates)[1].evidence == "2 of 5 duplicate deliveries refused"


def test_a_chaos_delivery_never_answered_was_not_refused() -> None:
    """A receiver that hangs or is down (a timeout, a refused connection) has not shown that it
    refuses a stale or wrongly signed delivery; it has failed to take a duplicate."""
    unanswered = [
        answer(None, 10_000, ChaosKind.DUPLICATE),
        answer(None, 10_000, ChaosKind.STALE_TIMESTAMP),
        answer(None, 10_000, ChaosKind.OLD_SECRET),
    ]
    items = {item.id: item for item in webhook_items(unanswered)}
    assert items["duplicates_accepted"].verdict is Verdict.FAILED
    for refusal in ("stale_timestamp_refused", "wrong_signature_refused"):
        assert items[refusal].verdict is Verdict.NOT_TRIED, items[refusal]
    answered = webhook_items([*unanswered, answer(401, 5, ChaosKind.STALE_TIMESTAMP)])
    assert (answered[2].verdict, answered[2].evidence) == (
        Verdict.PASSED,
        "all 1 stale_timestamp deliveries answered right",
    )


def test_a_refusal_counts_where_the_endpoint_then_took_the_event_clean() -> None:
    """A receiver answering every webhook 500 refused each stale and wrongly signed one, and
    passed both refusal items without checking a signature or a timestamp."""
    refusing_all = [
        Answers(ChaosKind.STALE_TIMESTAMP, False, True, 3, delivered=False),
        Answers(ChaosKind.OLD_SECRET, False, True, 3, delivered=False),
    ]
    items = {item.id: item for item in webhook_items(refusing_all)}
    for refusal in ("stale_timestamp_refused", "wrong_signature_refused"):
        assert items[refusal].verdict is Verdict.NOT_TRIED, items[refusal]
    assert items["stale_timestamp_refused"].evidence == (
        "no stale_timestamp delivery refused and then accepted clean yet "
        "(PUT /sandbox/webhook-chaos)"
    )
