"""bench: the targets judged from a finished report, CPU steal, CPU and core waits per process,
statement counts per payout and the batch endpoint's items as creates. Pure: reports are small
dicts built here (the core waits read a fake /proc in a temporary directory)."""

import asyncio
import copy
import math
from pathlib import Path
from typing import Any

import orjson
import pytest

import bench.load
from bench.batch import ITEM_STATUSES, UNKNOWN_ITEM_STATUS, item_results
from bench.http_client import ConnectionPool, HttpResponse
from bench.load import TRANSPORT_ERROR, CreateResult
from bench.observe import PayoutOutcome
from bench.phase import LoadKind, PhaseData, PhaseSpec, summarize
from bench.processes import core_wait_seconds
from bench.report import _scaling
from bench.run import half_rate, parse_arguments
from bench.sampler import Sample, core_wait_share, cpu_share
from bench.stages import StatementCounts, _mariadb_counts, _mysql_counts, counts_per_payout
from bench.steal import CpuTimes, steal_share
from bench.system import Topology
from bench.targets import Verdict, judge, steal_of

ROLES = ("peak", "hot", "half", "batch")


def passing_report() -> dict[str, Any]:
    """Every target met, each figure comfortably inside its limit."""
    per_payout = {
        "api": {"statements": 6.0, "commits": 1.0},
        "processor": {"statements": 5.0, "commits": 1.0},
        "relay": {"statements": 3.0, "commits": 1.0},
        "webhooks": {"statements": 4.0, "commits": 1.0},
        "total": {"statements": 18.0, "commits": 4.0},
    }
    peak = {
        "role": "peak",
        "load": "16 clients",
        "concurrency": 16,
        "createsPerSecond": 500.0,
        "endToEndPerSecond": 480.0,
        "createLatencyMs": {"p50": 20.0, "p99": 60.0},
        "createdToFinalMs": {"p50": 100.0, "p99": 300.0},
        "createdToWebhookMs": {"p50": 150.0, "p99": 400.0},
        "statementsPerPayout": per_payout,
        "stealShare": 0.02,
        "problems": [],
    }
    hot = {
        **copy.deepcopy(peak),
        "role": "hot",
        "load": "16 clients, 1 merchant",
        "createsPerSecond": 450.0,
    }
    half = {
        "role": "half",
        "load": "240.0 creates/s offered",
        "concurrency": 0,
        "createsPerSecond": 240.0,
        "endToEndPerSecond": 240.0,
        "createLatencyMs": {"p50": 5.0, "p99": 10.0},
        "createdToFinalMs": {"p50": 20.0, "p99": 40.0},
        "createdToWebhookMs": {"p50": 30.0, "p99": 50.0},
        "statementsPerPayout": per_payout,
        "stealShare": 0.02,
        "problems": [],
    }
    batch = {
        "role": "batch",
        "load": "5,000 payouts in 5 requests of ≤ 1,000, one after another, 1 merchant",
        "concurrency": 0,
        "createsPerSecond": 1000.0,
        "endToEndPerSecond": 500.0,
        "statementsPerPayout": {},
        "stealShare": 0.02,
        "batch": {
            "payouts": 5000,
            "requests": 5,
            "chunk": 1000,
            "created": 5000,
            "wallS": 5.0,
            "toLastEndToEndS": 12.0,
        },
        "problems": [],
    }
    return {
        "arguments": {"batch_payouts": 5000, "concurrency": 16, "merchants": 16},
        "webhooks": True,
        "floor": {"createTransaction": {"name": "create transaction", "perSecond": 1000.0}},
        "runs": [{"phases": [peak, hot, half, batch], "unmeasured": [], "reconcile": []}],
        "elapsedS": 300.0,
        "stealShare": 0.02,
    }


def phase(report: dict[str, Any], role: str) -> dict[str, Any]:
    return next(p for p in report["runs"][0]["phases"] if p["role"] == role)


def report_with(path: str, value: Any) -> dict[str, Any]:
    """A passing report with one figure changed: `peak.createLatencyMs.p99` names a key of the
    baseline's phase of that role, any other path a key of the report itself."""
    report = passing_report()
    keys = path.split(".")
    node = phase(report, keys.pop(0)) if keys[0] in ROLES else report
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    return report


def without_phase(report: dict[str, Any], role: str) -> dict[str, Any]:
    run = report["runs"][0]
    run["phases"] = [p for p in run["phases"] if p["role"] != role]
    return report


def verdict(verdicts: list[Verdict], fragment: str) -> Verdict:
    found = [v for v in verdicts if fragment in v.target]
    assert len(found) == 1, (fragment, [v.target for v in verdicts])
    return found[0]


STATEMENTS = "[1] statements per payout"
COMMITS = "[1] commits per payout"
HOT = "[2] one hot merchant"
CREATES_FLOOR = "[3] peak creates/s"
END_TO_END_FLOOR = "[3] peak end-to-end/s"
KEEPING_UP = "[4] peak end-to-end/s"
PEAK_WEBHOOK = "[4] created → signed webhook"
QUIET_CREATE = "[5] create p99"
QUIET_WEBHOOK = "[5] created → signed webhook"
PAYROLL = "[6] a 5,000-payout payroll"
RECONCILE = "`payouts reconcile` clean"
NO_ERRORS = "no non-2xx"
RUN_TIME = "`make bench` under 6 minutes"
ALL_TARGETS = [
    STATEMENTS,
    COMMITS,
    HOT,
    CREATES_FLOOR,
    END_TO_END_FLOOR,
    KEEPING_UP,
    PEAK_WEBHOOK,
    QUIET_CREATE,
    QUIET_WEBHOOK,
    PAYROLL,
    RECONCILE,
    NO_ERRORS,
    RUN_TIME,
]


def test_passing_report_meets_every_target() -> None:
    verdicts = judge(passing_report())
    assert len(verdicts) == len(ALL_TARGETS)
    for fragment, judged in zip(ALL_TARGETS, verdicts, strict=True):
        assert fragment in judged.target
        assert judged.met is True, judged


# (figure changed, its value, target, met): each limit exactly, and just past it.
BOUNDARIES = [
    # [1] statements ≤ 20 and commits ≤ 5 per payout, the total of the stages at peak
    ("peak.statementsPerPayout.total.statements", 20.0, STATEMENTS, True),
    ("peak.statementsPerPayout.total.statements", 20.01, STATEMENTS, False),
    ("peak.statementsPerPayout.total.commits", 5.0, COMMITS, True),
    ("peak.statementsPerPayout.total.commits", 5.01, COMMITS, False),
    # [2] hot merchant's creates/s ≥ 80 % of the peak's (500/s)
    ("hot.createsPerSecond", 400.0, HOT, True),
    ("hot.createsPerSecond", 399.9, HOT, False),
    ("peak.createsPerSecond", 562.5, HOT, True),  # 450 / 562.5 = 80 %
    ("peak.createsPerSecond", 562.6, HOT, False),
    # [3] peak creates/s (500) ≥ 40 % of the floor, end-to-end/s (480) ≥ 25 % of it
    ("floor.createTransaction.perSecond", 1250.0, CREATES_FLOOR, True),
    ("floor.createTransaction.perSecond", 1250.1, CREATES_FLOOR, False),
    ("peak.createsPerSecond", 400.0, CREATES_FLOOR, True),
    ("peak.createsPerSecond", 399.9, CREATES_FLOOR, False),
    ("floor.createTransaction.perSecond", 1920.0, END_TO_END_FLOOR, True),
    ("floor.createTransaction.perSecond", 1920.1, END_TO_END_FLOOR, False),
    ("peak.endToEndPerSecond", 250.0, END_TO_END_FLOOR, True),
    ("peak.endToEndPerSecond", 249.9, END_TO_END_FLOOR, False),
    # [4] end-to-end/s ≥ 90 % of creates/s (500) at peak, created → webhook p99 ≤ 1 s
    ("peak.endToEndPerSecond", 450.0, KEEPING_UP, True),
    ("peak.endToEndPerSecond", 449.9, KEEPING_UP, False),
    ("peak.createdToWebhookMs.p99", 1000.0, PEAK_WEBHOOK, True),
    ("peak.createdToWebhookMs.p99", 1000.01, PEAK_WEBHOOK, False),
    # [5] at half of peak: create p99 ≤ 25 ms, created → webhook p99 ≤ 100 ms
    ("half.createLatencyMs.p99", 25.0, QUIET_CREATE, True),
    ("half.createLatencyMs.p99", 25.01, QUIET_CREATE, False),
    ("half.createdToWebhookMs.p99", 100.0, QUIET_WEBHOOK, True),
    ("half.createdToWebhookMs.p99", 100.01, QUIET_WEBHOOK, False),
    # [6] all 5,000 created, the last one done, no problems
    ("batch.batch.created", 4999, PAYROLL, False),
    ("batch.batch.toLastEndToEndS", None, PAYROLL, False),
    ("batch.problems", ["1 payouts did not reach SUCCESS (e.g. p1)"], PAYROLL, False),
    # housekeeping: reconcile clean, no problems in any phase, the run under 360 s
    ("runs", [{**passing_report()["runs"][0], "reconcile": ["x"]}], RECONCILE, False),
    ("half.problems", ["2 creates failed: {'500': 2}"], NO_ERRORS, False),
    ("batch.problems", ["1 webhooks never arrived (e.g. e1)"], NO_ERRORS, False),
    ("elapsedS", 359.9, RUN_TIME, True),
    ("elapsedS", 360.0, RUN_TIME, False),
]


@pytest.mark.parametrize(("path", "value", "target", "met"), BOUNDARIES)
def test_target_at_its_boundary(path: str, value: Any, target: str, met: bool) -> None:
    assert verdict(judge(report_with(path, value)), target).met is met


# (figure, value, target): a figure that is NaN or absent is not measured, not missed.
UNMEASURED = [
    ("peak.statementsPerPayout.total.statements", math.nan, STATEMENTS),
    ("peak.statementsPerPayout", {}, STATEMENTS),  # no per-service database users
    ("peak.statementsPerPayout", {}, COMMITS),
    ("hot.createsPerSecond", math.nan, HOT),
    ("peak.createsPerSecond", 0.0, HOT),  # no whole to take a share of
    ("floor.createTransaction.perSecond", 0.0, CREATES_FLOOR),
    ("peak.endToEndPerSecond", math.nan, KEEPING_UP),
    ("peak.createdToWebhookMs.p99", math.nan, PEAK_WEBHOOK),
    ("half.createLatencyMs.p99", math.nan, QUIET_CREATE),
    ("runs", [{**passing_report()["runs"][0], "reconcile": None}], RECONCILE),
]


@pytest.mark.parametrize(("path", "value", "target"), UNMEASURED)
def test_missing_figure_is_not_measured(path: str, value: Any, target: str) -> None:
    assert verdict(judge(report_with(path, value)), target).met is None


@pytest.mark.parametrize(
    ("run_steal", "half_steal", "judged"),
    [
        (0.02, 0.02, True),
        (0.10, 0.02, True),  # at the limit: still judged
        (0.02, 0.10, True),
        (math.nan, math.nan, True),  # steal unknown: judged
        (None, 0.02, True),  # a report from before steal was recorded
        (0.1001, 0.02, False),  # the run's steal is over the limit
        (0.02, 0.11, False),  # the phase's own steal is over the limit
        (0.5, math.nan, False),
    ],
)
def test_quiet_latency_not_judged_under_heavy_steal(
    run_steal: float | None, half_steal: float, judged: bool
) -> None:
    report = report_with("half.createLatencyMs.p99", 30.0)  # missed, if judged
    report["stealShare"] = run_steal
    phase(report, "half")["stealShare"] = half_steal
    verdicts = judge(report)
    create, webhook = verdict(verdicts, QUIET_CREATE), verdict(verdicts, QUIET_WEBHOOK)
    if judged:
        assert (create.met, webhook.met) == (False, True)
        assert "not judged" not in create.measured
    else:
        assert (create.met, webhook.met) == (None, None)
        assert create.measured.startswith("30.0 ms: not judged (steal ")
        assert "not judged" in webhook.measured
    # steal makes only [5]'s absolute times incomparable: the rest is judged as ever
    assert verdict(verdicts, PEAK_WEBHOOK).met is True
    assert verdict(verdicts, HOT).met is True


@pytest.mark.parametrize(
    ("run_steal", "phase_steal", "expected"),
    [
        (0.02, 0.3, 0.3),
        (0.3, 0.02, 0.3),
        (None, 0.05, 0.05),
        (math.nan, 0.05, 0.05),
        ("n/a", 0.05, 0.05),
    ],
)
def test_steal_of_takes_the_worse_of_run_and_phase(
    run_steal: Any, phase_steal: float, expected: float
) -> None:
    assert steal_of({"stealShare": run_steal}, {"stealShare": phase_steal}) == expected


def test_steal_of_without_any_share_is_nan() -> None:
    assert math.isnan(steal_of({}, None))
    assert math.isnan(steal_of({"stealShare": math.nan}, {}))


def test_batch_not_available_is_unmeasured_not_missed() -> None:
    report = without_phase(passing_report(), "batch")
    reason = "batch endpoint not available (HTTP 404)"
    report["runs"][0]["unmeasured"] = [{"role": "batch", "name": "payroll", "reason": reason}]
    payroll = verdict(judge(report), PAYROLL)
    assert payroll.met is None
    assert payroll.measured == reason


def test_batch_not_run_is_not_judged_at_all() -> None:
    verdicts = judge(without_phase(passing_report(), "batch"))
    assert not [v for v in verdicts if v.target.startswith("[6]")]


def test_batch_measured_figures() -> None:
    payroll = verdict(judge(passing_report()), PAYROLL)
    assert payroll.measured == "5,000 of 5,000 created; wall 5.0 s, last done at 12.0 s; 0 problems"
    missing = verdict(judge(report_with("batch.batch.toLastEndToEndS", None)), PAYROLL)
    assert "last done at - s" in missing.measured


def test_without_the_webhook_service_end_to_end_targets_are_not_judged() -> None:
    # Figures that would miss every end-to-end target: none of them is judged a miss.
    report = report_with("webhooks", False)
    peak = phase(report, "peak")
    peak.update(endToEndPerSecond=1.0, createdToFinalMs={"p99": 5000.0})
    peak["statementsPerPayout"]["total"] = {"statements": 99.0, "commits": 99.0}
    phase(report, "half")["createdToFinalMs"] = {"p99": 5000.0}
    verdicts = judge(report)
    for target in (STATEMENTS, COMMITS, END_TO_END_FLOOR, KEEPING_UP, PEAK_WEBHOOK, QUIET_WEBHOOK):
        assert verdict(verdicts, target).met is None, target
    assert verdict(verdicts, PEAK_WEBHOOK).measured == (
        "5,000.0 ms to SUCCESS (webhook service not running)"
    )
    # what does not need the webhook service is still judged
    assert verdict(verdicts, CREATES_FLOOR).met is True
    assert verdict(verdicts, QUIET_CREATE).met is True


def test_statement_budget_shows_each_stage_and_the_total() -> None:
    statements = verdict(judge(passing_report()), STATEMENTS)
    assert statements.measured == "api 6.0 + processor 5.0 + relay 3.0 + webhooks 4.0 = 18.0"
    absent = verdict(judge(report_with("peak.statementsPerPayout", {})), COMMITS)
    assert absent.measured == "not counted (no per-service database users)"


def test_share_verdict_shows_the_ratio() -> None:
    hot = verdict(judge(passing_report()), HOT)
    assert hot.measured == "450.0 / 500.0 = 90%"
    assert "16 merchants'" in hot.target
    unknown = verdict(judge(report_with("hot.createsPerSecond", math.nan)), HOT)
    assert unknown.measured == "- / 500.0 = -"


@pytest.mark.parametrize(
    ("role", "absent"),
    [
        ("hot", [HOT]),
        ("half", [QUIET_CREATE, QUIET_WEBHOOK]),
        (
            "peak",
            [STATEMENTS, COMMITS, HOT, CREATES_FLOOR, END_TO_END_FLOOR, KEEPING_UP, PEAK_WEBHOOK],
        ),
    ],
)
def test_a_phase_not_run_drops_its_targets(role: str, absent: list[str]) -> None:
    targets = [v.target for v in judge(without_phase(passing_report(), role))]
    assert [f for f in ALL_TARGETS if any(f in t for t in targets)] == [
        f for f in ALL_TARGETS if f not in absent
    ]


def test_no_floor_drops_the_floor_targets() -> None:
    targets = [v.target for v in judge(report_with("floor", {}))]
    assert not [t for t in targets if t.startswith("[3]")]


def test_problems_are_counted_over_every_run_and_phase() -> None:
    report = passing_report()
    second = copy.deepcopy(report["runs"][0])
    phase({"runs": [second]}, "peak")["problems"] = ["a", "b"]
    report["runs"].append(second)
    phase(report, "hot")["problems"] = ["c"]
    errors = verdict(judge(report), NO_ERRORS)
    assert (errors.met, errors.measured) == (False, "3 problems")


@pytest.mark.parametrize(
    ("reconciles", "met", "measured"),
    [
        ([[], []], True, "0 discrepancies"),
        ([[], ["a", "b"]], False, "2 discrepancies"),
        ([[], None], None, "contracts/reconcile.py not present"),
    ],
)
def test_reconcile_after_every_run(
    reconciles: list[list[str] | None], met: bool | None, measured: str
) -> None:
    report = passing_report()
    report["runs"] = [
        {**copy.deepcopy(report["runs"][0]), "reconcile": result} for result in reconciles
    ]
    reconcile = verdict(judge(report), RECONCILE)
    assert (reconcile.met, reconcile.measured) == (met, measured)


# /proc/stat: user nice system idle iowait irq softirq steal guest guest_nice
PROC_STAT = """cpu  {user} 10 50 {idle} 20 5 5 {steal} 70 30
cpu0 1 2 3 4 5 6 7 8 9 10
intr 12345 0 0
ctxt 999
"""


def proc_stat(user: int, idle: int, steal: int) -> str:
    return PROC_STAT.format(user=user, idle=idle, steal=steal)


def test_cpu_times_parse_counts_eight_columns_of_the_cpu_line() -> None:
    times = CpuTimes.parse(proc_stat(user=100, idle=800, steal=10))
    # guest and guest_nice (70, 30) are already in user and nice; cpu0 is one core of the sum
    assert times == CpuTimes(total=100 + 10 + 50 + 800 + 20 + 5 + 5 + 10, steal=10)


@pytest.mark.parametrize(
    ("start", "end", "share"),
    [
        ((100, 800, 10), (100, 800, 10), math.nan),  # no time passed
        ((100, 800, 10), (300, 1600, 10), 0.0),
        ((100, 800, 10), (200, 1500, 160), 150 / 950),
        ((100, 800, 10), (100, 800, 110), 1.0),  # only steal passed
    ],
)
def test_steal_share_between_two_samples(
    start: tuple[int, int, int], end: tuple[int, int, int], share: float
) -> None:
    measured = steal_share(CpuTimes.parse(proc_stat(*start)), CpuTimes.parse(proc_stat(*end)))
    if math.isnan(share):
        assert math.isnan(measured)
    else:
        assert measured == pytest.approx(share)


def test_steal_share_of_samples_out_of_order_is_nan() -> None:
    assert math.isnan(steal_share(CpuTimes(total=2000, steal=50), CpuTimes(total=1000, steal=10)))


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        # COMMIT_TRANSACTIONS 20 = 10 SELECTs + 6 writes + 4 real commits
        (("db_api", 10, 6, 14, 20, 1), StatementCounts(10, 6, 14, 4, 1)),
        (("db_relay", 0, 0, 0, 0, 0), StatementCounts()),
        # a table-less SELECT 1 adds a SELECT but no statement-level commit: one too few commits
        (("db_processor", 1, 0, 0, 0, 0), StatementCounts(selects=1, commits=-1)),
    ],
)
def test_mariadb_commits_are_engine_commits_less_selects_and_writes(
    row: tuple[Any, ...], expected: StatementCounts
) -> None:
    counts = _mariadb_counts(row)
    assert counts == expected
    assert counts.statements == expected.selects + expected.writes + expected.other


def test_mysql_counts_by_statement_event() -> None:
    counts = _mysql_counts(
        {
            "statement/sql/select": 7,
            "statement/sql/insert": 3,
            "statement/sql/update": 2,
            "statement/sql/delete_multi": 1,
            "statement/sql/commit": 4,
            "statement/sql/rollback": 1,
            "statement/sql/begin": 5,
            "statement/sql/set_option": 2,
        }
    )
    assert counts == StatementCounts(selects=7, writes=6, other=12, commits=4, rollbacks=1)
    assert counts.statements == 25


def test_statement_counts_add_and_subtract_field_by_field() -> None:
    earlier = StatementCounts(1, 2, 3, 4, 5)
    later = StatementCounts(11, 22, 33, 44, 55)
    assert later - earlier == StatementCounts(10, 20, 30, 40, 50)
    assert earlier + later == StatementCounts(12, 24, 36, 48, 60)
    assert StatementCounts(commits=-2).floored() == StatementCounts()
    assert StatementCounts(rollbacks=-1).floored() == StatementCounts(rollbacks=-1)


def test_counts_per_payout_divides_each_stage_and_sums_a_total() -> None:
    before = {"api": StatementCounts(100, 50, 70, 20, 1), "processor": StatementCounts()}
    after = {
        "api": StatementCounts(120, 70, 100, 30, 1),
        "processor": StatementCounts(15, 10, 25, 11, 2),
    }
    changes = {name: after[name] - before[name] for name in after}
    assert counts_per_payout(changes, 10) == {
        "api": {
            "selects": 2.0,
            "writes": 2.0,
            "other": 3.0,
            "commits": 1.0,
            "rollbacks": 0.0,
            "statements": 7.0,
        },
        "processor": {
            "selects": 1.5,
            "writes": 1.0,
            "other": 2.5,
            "commits": 1.1,
            "rollbacks": 0.2,
            "statements": 5.0,
        },
        "total": {
            "selects": 3.5,
            "writes": 3.0,
            "other": 5.5,
            "commits": 2.1,
            "rollbacks": 0.2,
            "statements": 12.0,
        },
    }


def test_counts_per_payout_floors_negative_commits_before_the_total() -> None:
    changes = {"api": StatementCounts(selects=3, commits=-2), "relay": StatementCounts(commits=6)}
    per_payout = counts_per_payout(changes, 3)
    assert per_payout["api"]["commits"] == 0.0
    assert per_payout["total"]["commits"] == 2.0  # 6 / 3, not (6 - 2) / 3
    assert per_payout["total"]["selects"] == 1.0


def test_counts_per_payout_are_kept_unrounded_for_the_budget_to_judge() -> None:
    """Rounded to two places, 20.004 statements a payout read 20.0 and met [1] (the bench
    review): the report rounds what it shows."""
    per_payout = counts_per_payout({"api": StatementCounts(selects=1, writes=2)}, 3)
    assert per_payout["api"]["selects"] == pytest.approx(1 / 3)
    assert per_payout["api"]["writes"] == pytest.approx(2 / 3)
    assert per_payout["total"]["statements"] == 1.0


@pytest.mark.parametrize(
    ("changes", "payouts"),
    [({}, 10), ({"api": StatementCounts(selects=5)}, 0)],
)
def test_counts_per_payout_without_stages_or_payouts_is_empty(
    changes: dict[str, StatementCounts], payouts: int
) -> None:
    assert counts_per_payout(changes, payouts) == {}


def batch_response(results: list[dict[str, Any]], status: int = 200) -> HttpResponse:
    return HttpResponse(status, orjson.dumps({"data": {"results": results, "summary": {}}}))


def test_item_statuses_are_the_single_creates_answers() -> None:
    assert ITEM_STATUSES == {"created": 201, "duplicate": 409, "invalid": 422}


def test_batch_items_become_create_results() -> None:
    created = {"index": 0, "status": "created", "payout": {"id": "po_1"}}
    duplicate = {"index": 1, "status": "duplicate", "payoutId": "po_old"}
    invalid = {"index": 2, "status": "invalid", "errors": [{"field": "amount"}]}
    unknown = {"index": 3, "status": "queued"}
    results = item_results(batch_response([created, duplicate, invalid, unknown]), 4, 100.0, 0.5)
    assert results[0] == CreateResult(100.0, 0.5, 201, "po_1", None)
    assert [r.status for r in results] == [201, 409, 422, UNKNOWN_ITEM_STATUS]
    assert [r.ok for r in results] == [True, False, False, False]
    # a duplicate names its payout as `payoutId`, not `payout`: no id taken from it
    assert [r.payout_id for r in results] == ["po_1", None, None, None]
    assert [orjson.loads(r.error or "") for r in results[1:]] == [duplicate, invalid, unknown]
    assert {(r.sent_at, r.latency) for r in results} == {(100.0, 0.5)}


def test_batch_item_error_is_cut_to_300_characters() -> None:
    invalid = {"status": "invalid", "errors": [{"message": "x" * 500}]}
    [result] = item_results(batch_response([invalid]), 1, 0.0, 0.1)
    assert result.error == orjson.dumps(invalid)[:300].decode()
    assert len(result.error) == 300


@pytest.mark.parametrize(
    ("response", "items", "status"),
    [
        # fewer or more results than items sent: the answer cannot be matched up, every item fails
        (batch_response([{"status": "created", "payout": {"id": "po_1"}}]), 2, 0),
        (batch_response([{"status": "created", "payout": {"id": f"po_{n}"}} for n in "123"]), 2, 0),
        (HttpResponse(200, b"not json"), 2, UNKNOWN_ITEM_STATUS),
        (HttpResponse(200, b'{"data": []}'), 2, UNKNOWN_ITEM_STATUS),
        (HttpResponse(200, b'{"error": "x"}'), 2, UNKNOWN_ITEM_STATUS),
        (HttpResponse(413, b'{"error": "too large"}'), 3, 413),
        (HttpResponse(TRANSPORT_ERROR, b"ConnectionResetError"), 2, TRANSPORT_ERROR),
    ],
)
def test_a_failed_batch_request_fails_every_item(
    response: HttpResponse, items: int, status: int
) -> None:
    results = item_results(response, items, 5.0, 1.5)
    assert len(results) == items
    prefix = f"HTTP {response.status}: {response.body.decode()}"
    assert set(results) == {CreateResult(5.0, 1.5, status, None, prefix)}
    assert not any(r.ok for r in results)


def test_failed_batch_request_error_keeps_undecodable_body() -> None:
    [result] = item_results(HttpResponse(500, b"\xff" + b"e" * 400), 1, 0.0, 0.0)
    assert result.status == 500
    assert result.error == "HTTP 500: \ufffd" + "e" * 299


def test_a_topology_names_its_webhook_services_or_runs_one() -> None:
    assert Topology.parse("2:1:1", webhooks=1) == Topology(2, 1, 1, 1)
    assert Topology.parse("1:2:1:3", webhooks=1) == Topology(1, 2, 1, 3)
    assert Topology.parse("1:2:1:3", webhooks=0) == Topology(1, 2, 1, 0)  # no webhook service


def test_each_topology_runs_once_even_where_only_the_webhook_services_told_them_apart() -> None:
    specs = ["1:1:1", "2:1:1", "1:1:1:2"]
    assert Topology.each_once(specs, webhooks=1) == [
        Topology(1, 1, 1, 1),
        Topology(2, 1, 1, 1),
        Topology(1, 1, 1, 2),
    ]
    assert Topology.each_once(specs, webhooks=0) == [Topology(1, 1, 1, 0), Topology(2, 1, 1, 0)]


async def test_the_load_generator_does_not_reuse_a_connection_the_server_closed() -> None:
    """The API closes a connection idle past its keep-alive timeout; a create sent on it got no
    answer and counted as a failed create (seen once in a memory soak)."""
    connections = 0

    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # as after a keep-alive timeout: no `Connection: close` said

    server = await asyncio.start_server(answer_once, "127.0.0.1", 0)
    pool = ConnectionPool("127.0.0.1", server.sockets[0].getsockname()[1])
    async with server:
        responses = []
        for _ in range(2):
            connection = pool.acquire()
            responses.append(await connection.request("POST", "/p"))
            pool.release(connection)
            await asyncio.sleep(0.1)  # the server's close reaches the idle connection
        pool.close()

    assert [response.status for response in responses] == [201, 201]
    assert connections == 2


def test_the_scaling_table_shows_each_topologys_webhook_p99() -> None:
    """Which stage to scale shows in created→webhook p99: the default topologies include a
    second webhook service."""

    def run(label: str, webhook_p99: float | None) -> dict[str, Any]:
        peak: dict[str, Any] = {
            "createsPerSecond": 100.0,
            "endToEndPerSecond": 100.0,
            "createLatencyMs": {"p99": 300.0},
            "createdToFinalMs": {"p99": 400.0},
        }
        if webhook_p99 is not None:
            peak["createdToWebhookMs"] = {"p99": webhook_p99}
        return {"label": label, "phases": [peak], "reconcile": []}

    rows = _scaling({"runs": [run("webhooks x1", 1500.0), run("webhooks x2", 850.0)]})
    assert "created→webhook p99 ms" in rows[0]
    assert "| 1,500.0 | clean |" in rows[2] and "| 850.0 | clean |" in rows[3]
    assert "| 400.0 | - | clean |" in _scaling({"runs": [run("no webhooks", None)]})[2]
    assert "1:1:1:2" in parse_arguments([]).topologies.split(",")


def test_cpu_and_core_wait_are_shares_of_the_time_between_the_first_and_last_sample() -> None:
    samples = {
        "webhooks": [Sample(10.0, 0, cpu=5.0, core_wait=1.0), Sample(12.0, 0, 6.0, 2.2)],
        "idle": [Sample(10.0, 0, 1.0, 0.0), Sample(12.0, 0, 1.0, 0.0)],
        "one sample": [Sample(10.0, 0, 1.0, 1.0)],
    }
    assert cpu_share(samples) == {"webhooks": 50.0, "idle": 0.0}
    assert core_wait_share(samples) == pytest.approx({"webhooks": 60.0, "idle": 0.0})


def test_core_wait_sums_every_thread_of_a_process_and_skips_a_gone_one(tmp_path: Path) -> None:
    tasks = tmp_path / "42" / "task"
    for tid, schedstat in (("42", "900 2000000000 7\n"), ("43", "5 500000000 1\n"), ("44", "")):
        (tasks / tid).mkdir(parents=True)
        (tasks / tid / "schedstat").write_text(schedstat)  # 44: a thread that just ended
    assert core_wait_seconds([42, 77], proc=tmp_path) == 2.5  # 77: a process gone meanwhile


def test_a_webhook_p99_with_webhooks_that_never_came_is_missed() -> None:
    """The percentile is of the webhooks that came: a tenth of them lost still read "met"."""
    report = report_with("peak.webhooksMissing", 12)
    peak_webhooks = verdict(judge(report), PEAK_WEBHOOK)
    assert peak_webhooks.met is False
    assert "12 never came" in peak_webhooks.measured


def test_the_payroll_is_not_judged_on_webhooks_without_the_webhook_service() -> None:
    """The verdict "every webhook in" read met with no webhook sent at all."""
    report = passing_report()
    report["webhooks"] = False
    payroll = verdict(judge(report), PAYROLL)
    assert payroll.met is None
    assert "webhook service not running" in payroll.measured


def test_a_create_p99_with_creates_that_failed_is_missed() -> None:
    """The percentile is of the creates answered 2xx: 3 % of them answered 503 after 2 s and
    [5] still read met (the bench review)."""
    report = report_with("half.createsFailed", 31)
    quiet_create = verdict(judge(report), QUIET_CREATE)
    assert quiet_create.met is False
    assert "31 failed" in quiet_create.measured


def test_half_of_peak_falls_back_on_the_creates_when_nothing_settled_in_the_peak() -> None:
    """Nothing settled in the peak's window (0 end-to-end/s, not NaN): the latency phase ran at
    1 create/s and judged [5] "at half of peak" (the bench review)."""
    peak = {"endToEndPerSecond": 0.0, "createsPerSecond": 100.0}
    assert half_rate(parse_arguments([]), peak) == 50.0


@pytest.mark.parametrize(
    "arguments",
    [
        ["--warmup", "10", "--duration", "10"],
        ["--warmup", "5", "--half-duration", "5"],
        ["--warmup", "5", "--soak", "5"],
    ],
)
def test_a_warmup_that_leaves_no_window_is_refused(arguments: list[str]) -> None:
    """`--strict --warmup 10 --duration 10` measured nothing, judged nothing, and passed."""
    with pytest.raises(SystemExit):
        parse_arguments(arguments)


async def test_a_create_never_answered_fails_instead_of_holding_the_phase(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hung API held the phase, and `make bench`, for good (the bench review)."""

    async def never_answer(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass

    monkeypatch.setattr(bench.load, "REQUEST_TIMEOUT_SECONDS", 0.2)
    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    target = bench.load.Target("127.0.0.1", server.sockets[0].getsockname()[1])
    async with server, asyncio.timeout(10):
        results = await bench.load.closed_loop(
            target, bench.load.PayoutRequests(["key"], run_tag="t"), concurrency=2, duration=0.3
        )

    assert results and {(r.status, r.error) for r in results} == {(TRANSPORT_ERROR, "TimeoutError")}


def _phase_of(role: str, latencies: list[float], window: float) -> dict[str, Any]:
    """The summary of a closed-loop phase of `role`: one 201 per latency, spread over `window`
    seconds, each payout succeeding 10 ms after it was created."""
    spec = PhaseSpec(role, role, LoadKind.CLOSED, window, 0.0, concurrency=16)
    step = window / len(latencies)
    creates = [
        CreateResult(1_000.0 + i * step, latency, 201, f"p{i}")
        for i, latency in enumerate(latencies)
    ]
    outcomes = {
        c.payout_id: PayoutOutcome("SUCCESS", c.answered_at, c.answered_at + 0.01)
        for c in creates
        if c.payout_id
    }
    data = PhaseData(
        spec=spec,
        started_at=1_000.0,
        ended_at=1_000.0 + window,
        drain_seconds=0.5,
        creates=creates,
        outcomes=outcomes,
        receipts=[],
        malformed_webhooks=0,
        expected_events=set(),
        outbox_sent_in_window=0,
        webhooks=False,
        resources={},
        database={},
        statements={},
        steal=0.0,
        exited={},
        lock_waits=[],
    )
    return summarize(data)


def test_targets_are_judged_on_the_figures_as_measured_not_as_shown() -> None:
    """The summary rounded what the targets judge: 7,996 hot creates against 10,000 in 100 s
    (79.96 %) read 80.0 / 100.0 and met; a create p99 of 25.004 ms read 25.0 and met (the
    bench review)."""
    peak = _phase_of("peak", [0.01] * 10_000, 100.0)
    hot = _phase_of("hot", [0.01] * 7_996, 100.0)
    quiet = _phase_of("half", [0.025004] * 100, 10.0)
    assert hot["createsPerSecond"] == pytest.approx(79.96)
    assert quiet["createLatencyMs"]["p99"] == pytest.approx(25.004)

    report = passing_report()
    report["runs"][0]["phases"] = [
        {**phase(report, "peak"), "createsPerSecond": peak["createsPerSecond"]},
        {**phase(report, "hot"), "createsPerSecond": hot["createsPerSecond"]},
        {**phase(report, "half"), "createLatencyMs": quiet["createLatencyMs"]},
        phase(report, "batch"),
    ]
    verdicts = judge(report)
    assert verdict(verdicts, HOT).met is False
    assert verdict(verdicts, HOT).measured.endswith("= 79%")
    assert verdict(verdicts, QUIET_CREATE).met is False
