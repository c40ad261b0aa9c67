"""The performance issue's targets, judged from a finished report (pure).

Where machine speed matters the targets are ratios of figures from the same run: this host's
cores are shared and its CPU steal swings widely. [n] is the target's number in the issue.
"""

import math
from dataclasses import asdict, dataclass
from typing import Any

STATEMENTS_PER_PAYOUT_LIMIT = 20.0
COMMITS_PER_PAYOUT_LIMIT = 5.0
HOT_MERCHANT_SHARE_LIMIT = 0.8  # of the peak's creates/s
CREATES_FLOOR_SHARE_LIMIT = 0.4  # of the create-SQL floor
END_TO_END_FLOOR_SHARE_LIMIT = 0.25  # of the create-SQL floor
KEEPING_UP_SHARE_LIMIT = 0.9  # end-to-end/s of creates/s at the peak
PEAK_WEBHOOK_P99_LIMIT_MS = 1000.0
QUIET_CREATE_P99_LIMIT_MS = 25.0
QUIET_WEBHOOK_P99_LIMIT_MS = 100.0
STEAL_LIMIT = 0.10  # above it absolute times are not comparable across runs
RUN_SECONDS_LIMIT = 360.0


@dataclass(frozen=True)
class Verdict:
    target: str
    measured: str
    met: bool | None  # None: not measured (or not judged) in this run


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not math.isnan(value)


def _at_most(value: Any, limit: float) -> bool | None:
    return value <= limit if _finite(value) else None


def _share(part: Any, whole: Any) -> float:
    return (
        float(part) / float(whole) if _finite(part) and _finite(whole) and whole > 0 else math.nan
    )


def _share_verdict(target: str, part: Any, whole: Any, limit: float) -> Verdict:
    share = _share(part, whole)
    # Cut, not rounded: 79.96 % read "80%" next to its "missed".
    shown = "-" if math.isnan(share) else f"{math.floor(share * 100)}%"
    return Verdict(
        target,
        f"{_number(part)} / {_number(whole)} = {shown}",
        share >= limit if _finite(share) else None,
    )


def _number(value: Any) -> str:
    return f"{value:,.1f}" if _finite(value) else "-"


def steal_of(report: dict[str, Any], phase: dict[str, Any] | None) -> float:
    """The worse of the run's steal and the phase's own: either makes its times incomparable."""
    shares: list[Any] = [report.get("stealShare"), (phase or {}).get("stealShare")]
    return max((float(share) for share in shares if _finite(share)), default=math.nan)


def _statement_budget(report: dict[str, Any], peak: dict[str, Any]) -> list[Verdict]:
    per_payout = peak.get("statementsPerPayout") or {}
    stages = [name for name in per_payout if name != "total"]

    def verdict(kind: str, limit: float) -> Verdict:
        target = f"[1] {kind} per payout ≤ {limit:.0f} (create → SUCCESS → 3 webhooks, at peak)"
        if not per_payout:
            return Verdict(target, "not counted (no per-service database users)", None)
        if per_payout["total"]["statements"] == 0:  # a create costs statements: none counted
            return Verdict(target, "no statement counted (was userstat switched off?)", False)
        measured = " + ".join(f"{name} {per_payout[name][kind]:.1f}" for name in stages)
        measured += f" = {per_payout['total'][kind]:.1f}"
        if not report["webhooks"]:
            return Verdict(target, measured + " (webhook service not running)", None)
        return Verdict(target, measured, _at_most(per_payout["total"][kind], limit))

    return [
        verdict("statements", STATEMENTS_PER_PAYOUT_LIMIT),
        verdict("commits", COMMITS_PER_PAYOUT_LIMIT),
    ]


def _throughput(
    report: dict[str, Any], peak: dict[str, Any], hot: dict[str, Any] | None
) -> list[Verdict]:
    clients, merchants = peak["concurrency"], report["arguments"]["merchants"]
    verdicts = []
    if hot:
        verdicts.append(
            _share_verdict(
                f"[2] one hot merchant's creates/s ≥ {HOT_MERCHANT_SHARE_LIMIT:.0%} of "
                f"{merchants} merchants' (both {clients} clients)",
                hot["createsPerSecond"],
                peak["createsPerSecond"],
                HOT_MERCHANT_SHARE_LIMIT,
            )
        )
    floor = report.get("floor", {}).get("createTransaction")
    if floor:
        verdicts.append(
            _share_verdict(
                f"[3] peak creates/s ≥ {CREATES_FLOOR_SHARE_LIMIT:.0%} of the create-SQL floor",
                peak["createsPerSecond"],
                floor["perSecond"],
                CREATES_FLOOR_SHARE_LIMIT,
            )
        )
        verdicts.append(
            _webhooks_only(
                report,
                _share_verdict(
                    f"[3] peak end-to-end/s ≥ {END_TO_END_FLOOR_SHARE_LIMIT:.0%} of the "
                    "create-SQL floor",
                    peak["endToEndPerSecond"],
                    floor["perSecond"],
                    END_TO_END_FLOOR_SHARE_LIMIT,
                ),
            )
        )
    verdicts.append(
        _webhooks_only(
            report,
            _share_verdict(
                f"[4] peak end-to-end/s ≥ {KEEPING_UP_SHARE_LIMIT:.0%} of its creates/s",
                peak["endToEndPerSecond"],
                peak["createsPerSecond"],
                KEEPING_UP_SHARE_LIMIT,
            ),
        )
    )
    verdicts.append(_webhook_p99(report, "[4]", peak, PEAK_WEBHOOK_P99_LIMIT_MS, "at peak"))
    return verdicts


def _webhooks_only(report: dict[str, Any], verdict: Verdict) -> Verdict:
    """End to end means the signed webhook received; without the webhook service it is not."""
    if report["webhooks"]:
        return verdict
    return Verdict(
        verdict.target, verdict.measured + " (to SUCCESS: webhook service not running)", None
    )


def _webhook_p99(
    report: dict[str, Any], number: str, phase: dict[str, Any], limit: float, where: str
) -> Verdict:
    target = f"{number} created → signed webhook received p99 ≤ {limit:,.0f} ms {where}"
    if not report["webhooks"]:
        p99 = phase["createdToFinalMs"]["p99"]
        return Verdict(target, f"{_number(p99)} ms to SUCCESS (webhook service not running)", None)
    p99 = phase["createdToWebhookMs"]["p99"]
    missing = phase.get("webhooksMissing", 0)
    if missing:  # a p99 of the webhooks that came says nothing of those that never did
        return Verdict(target, f"{_number(p99)} ms, but {missing:,} never came", False)
    return Verdict(target, f"{_number(p99)} ms", _at_most(p99, limit))


def _create_p99(phase: dict[str, Any], limit: float, where: str) -> Verdict:
    target = f"[5] create p99 ≤ {limit:.0f} ms {where}"
    p99 = phase["createLatencyMs"]["p99"]
    failed = phase.get("createsFailed", 0)
    if failed:  # a p99 of the creates answered 2xx says nothing of those that failed
        return Verdict(target, f"{_number(p99)} ms, but {failed:,} failed", False)
    return Verdict(target, f"{_number(p99)} ms", _at_most(p99, limit))


def _quiet_latency(report: dict[str, Any], half: dict[str, Any]) -> list[Verdict]:
    where = f"at half of peak ({half['load']})"
    verdicts = [
        _create_p99(half, QUIET_CREATE_P99_LIMIT_MS, where),
        _webhook_p99(report, "[5]", half, QUIET_WEBHOOK_P99_LIMIT_MS, where),
    ]
    steal = steal_of(report, half)
    if _finite(steal) and steal > STEAL_LIMIT:
        return [
            Verdict(v.target, f"{v.measured}: not judged (steal {steal:.0%})", None)
            for v in verdicts
        ]
    return verdicts


def _payroll(report: dict[str, Any], batch: dict[str, Any] | None) -> list[Verdict]:
    target = (
        f"[6] a {report['arguments']['batch_payouts']:,}-payout payroll through "
        "POST /payouts/batch: all SUCCESS, every webhook in"
    )
    unmeasured = report["runs"][0].get("unmeasured", [])
    absent = [item for item in unmeasured if item["role"] == "batch"]
    if absent:
        return [Verdict(target, absent[0]["reason"], None)]
    if batch is None:
        return []
    figures = batch["batch"]
    last = figures["toLastEndToEndS"]
    measured = (
        f"{figures['created']:,} of {figures['payouts']:,} created; wall {figures['wallS']:.1f} s,"
        f" last done at {'-' if last is None else f'{last:.1f}'} s; "
        f"{len(batch['problems'])} problems"
    )
    complete = figures["created"] == figures["payouts"] and last is not None
    return [_webhooks_only(report, Verdict(target, measured, complete and not batch["problems"]))]


def _housekeeping(report: dict[str, Any]) -> list[Verdict]:
    reconciles = [run["reconcile"] for run in report["runs"]]
    absent = any(result is None for result in reconciles)
    problems = sum(len(phase["problems"]) for run in report["runs"] for phase in run["phases"])
    return [
        Verdict(
            "`payouts reconcile` clean after every run",
            "contracts/reconcile.py not present"
            if absent
            else f"{sum(len(result) for result in reconciles)} discrepancies",
            None if absent else all(not result for result in reconciles),
        ),
        Verdict(
            "no non-2xx, no lost payout, no missing webhook",
            f"{problems} problems",
            problems == 0,
        ),
        Verdict(
            f"`make bench` under {RUN_SECONDS_LIMIT / 60:.0f} minutes",
            f"{report['elapsedS']:.0f} s",
            report["elapsedS"] < RUN_SECONDS_LIMIT,
        ),
    ]


def judge(report: dict[str, Any]) -> list[Verdict]:
    baseline = report["runs"][0]
    phases = {phase["role"]: phase for phase in baseline["phases"]}
    peak, half = phases.get("peak"), phases.get("half")
    verdicts = []
    if peak:
        verdicts += _statement_budget(report, peak)
        verdicts += _throughput(report, peak, phases.get("hot"))
    if half:
        verdicts += _quiet_latency(report, half)
    verdicts += _payroll(report, phases.get("batch"))
    return verdicts + _housekeeping(report)


def as_json(verdicts: list[Verdict]) -> list[dict[str, Any]]:
    return [asdict(verdict) for verdict in verdicts]
