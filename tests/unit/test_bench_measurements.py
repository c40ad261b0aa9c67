"""What the bench measures, fed synthetic data: a phase's end-to-end rate counts its own
payouts, counters that counted nothing meet no budget, the create-SQL floor does not count its
clients' connecting, and target [2] names the merchants the peak used (a bench review)."""

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

import bench.floor
from bench.load import CreateResult
from bench.observe import PayoutOutcome, Receipt
from bench.phase import LoadKind, PhaseData, PhaseSpec, summarize
from bench.run import parse_arguments, peak_phase
from bench.stages import STAGES, StatementCounts, counts_per_payout
from bench.targets import judge
from tests.unit.test_bench_judging import COMMITS, STATEMENTS, passing_report, verdict


def _receipt(payout_id: str, created_at: float, received_at: float) -> Receipt:
    return Receipt(
        received_at=received_at,
        webhook_id=f"evt_{payout_id}_succeeded",
        type="payout.succeeded",
        payout_id=payout_id,
        payout_created_at=created_at,
        event_created_at=received_at - 0.01,
        signature_valid=True,
        client_port=50000,
    )


def _phase(
    receipts: list[Receipt], creates: list[CreateResult], outcomes: dict[str, Any]
) -> PhaseData:
    return PhaseData(
        spec=PhaseSpec("peak", "peak", LoadKind.CLOSED, 10.0, 0.0, concurrency=16),
        started_at=1_000.0,
        ended_at=1_010.0,
        drain_seconds=0.3,
        creates=creates,
        outcomes=outcomes,
        receipts=receipts,
        malformed_webhooks=0,
        expected_events={r.webhook_id for r in receipts},
        outbox_sent_in_window=0,
        webhooks=True,
        resources={},
        database={},
        statements={},
        steal=0.0,
        exited={},
        lock_waits=[],
    )


def test_end_to_end_rate_counts_only_the_payouts_of_its_own_phase() -> None:
    """10 payouts created in a 10 s window, each webhook 100 ms later: 1 end-to-end/s. Ten
    payout.succeeded webhooks of payouts of an EARLIER phase (late redeliveries, or the backlog
    of a phase whose drain gave up) arrive in the window too. end_to_end_at() took every
    payout.succeeded receipt of the take, whatever phase created its payout, so they doubled the
    phase's end-to-end/s (target [3] end-to-end and [4] keeping-up read it)."""
    creates = [CreateResult(1_000.0 + i, 0.05, 201, f"p{i}") for i in range(10)]
    outcomes = {
        c.payout_id: PayoutOutcome("SUCCESS", c.answered_at, c.answered_at + 0.05)
        for c in creates
        if c.payout_id
    }
    own = [_receipt(c.payout_id or "", c.answered_at, c.answered_at + 0.1) for c in creates]
    earlier = [_receipt(f"old{i}", 990.0, 1_000.5 + i) for i in range(10)]

    summary = summarize(_phase(own + earlier, creates, outcomes))

    assert summary["createsPerSecond"] == pytest.approx(1.0)
    assert summary["endToEndPerSecond"] == pytest.approx(1.0), (
        "end-to-end/s counted payout.succeeded webhooks of payouts this phase never created"
    )


def test_per_stage_counters_that_counted_nothing_do_not_meet_the_statement_budget() -> None:
    """USER_STATISTICS rows only move while `userstat` is on (the README itself says to
    `SET GLOBAL userstat = 0` by hand; on MySQL 8 with performance_schema off the summary table
    has no rows). read_stage_counts() then gives zeros for every stage (dict.fromkeys), before
    and after: a peak of 1,000 created payouts "costs" 0 statements and 0 commits, and target
    [1] read MET, so --strict passed on counters that never counted. A create cannot cost 0
    statements: none counted is a measurement that failed, not a budget met."""
    zero = {stage.name: StatementCounts() for stage in STAGES}
    report = passing_report()
    peak = next(p for p in report["runs"][0]["phases"] if p["role"] == "peak")
    peak["statementsPerPayout"] = counts_per_payout(zero, 1_000)

    verdicts = judge(report)

    assert verdict(verdicts, STATEMENTS).met is not True, verdict(verdicts, STATEMENTS)
    assert verdict(verdicts, COMMITS).met is not True, verdict(verdicts, COMMITS)


class _FakeCursor:
    async def __aenter__(self) -> "_FakeCursor":
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def execute(self, *args: object) -> None:
        return None


class _FakeConnection:
    def cursor(self) -> _FakeCursor:
        return _FakeCursor()

    def close(self) -> None:
        return None

    async def rollback(self) -> None:
        return None


CONNECT_SECONDS = 0.5
REQUEST_SECONDS = 0.01


async def test_the_create_sql_floor_does_not_count_connection_set_up_as_work_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The floor's deadline and its clock started before the clients connected, and there was no
    warm-up (the HTTP floor has 0.5 s, every system phase 2 s): connection set-up (and the cold
    first requests) eat into the measured duration and deflated the txn/s that target [3]
    divides by, which inflated the system's ratio to it. Here each request's SQL takes 10 ms
    (~100/s for one client) but connecting took 0.5 s of a 1 s floor: it reported ~50/s."""

    async def slow_connect(**_: object) -> _FakeConnection:
        await asyncio.sleep(CONNECT_SECONDS)
        return _FakeConnection()

    async def request_sql(*_: object) -> None:
        await asyncio.sleep(REQUEST_SECONDS)

    monkeypatch.setattr(bench.floor.asyncmy, "connect", slow_connect)
    monkeypatch.setattr(bench.floor, "_create_request_sql", request_sql)

    # The rate this client can sustain once connected, measured the same way.
    began, done = time.perf_counter(), 0
    while time.perf_counter() - began < 0.5:
        await request_sql()
        done += 1
    sustained = done / (time.perf_counter() - began)

    result = await bench.floor.create_transaction_floor(
        "mysql+asyncmy://root@127.0.0.1:3306/payouts_r_bench",
        [SimpleNamespace(merchant_id="m1", api_key="mpk_test_x")],
        concurrency=1,
        duration=1.0,
    )

    assert result.per_second >= 0.8 * sustained, (result.per_second, sustained)


def test_the_hot_merchant_target_names_the_merchants_the_peak_actually_used() -> None:
    """`--merchants 4 --concurrency 16`: the peak's 16 clients took 4 merchants in turn, yet
    target [2] read "of 16 merchants'" (bench/targets.py built it from the peak's
    concurrency), and the peak's own load column said only "16 clients": the report claims a
    comparison with 16 merchants that the run never made."""
    report = passing_report()
    report["arguments"]["merchants"] = 4

    hot = verdict(judge(report), "[2] one hot merchant")

    assert "of 4 merchants'" in hot.target, hot.target
    peak = peak_phase(parse_arguments(["--merchants", "4", "--concurrency", "16"]))
    assert peak.load == "16 clients, 4 merchants"
