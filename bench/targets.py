"""The targets of issue 6, judged from a finished report (pure)."""

import math
from dataclasses import asdict, dataclass
from typing import Any

CREATE_P99_LIMIT_MS = 50.0
FLOOR_SHARE_LIMIT = 0.5
WEBHOOK_P99_LIMIT_MS = 250.0
RSS_DRIFT_LIMIT = 0.10
SERVICE_PREFIXES = ("api", "processor", "outbox-relay", "webhooks")


@dataclass(frozen=True)
class Verdict:
    target: str
    measured: str
    met: bool | None  # None: not measurable in this run


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not math.isnan(value)


def judge(report: dict[str, Any]) -> list[Verdict]:
    baseline = report["runs"][0]
    phases = {phase["role"]: phase for phase in baseline["phases"]}
    peak, half, soak = phases.get("peak"), phases.get("half"), phases.get("soak")
    verdicts = []
    every_service = " (webhook service not running)" if not report["webhooks"] else ""
    if peak:
        p99 = peak["createLatencyMs"]["p99"]
        verdicts.append(
            Verdict(
                f"create p99 ≤ {CREATE_P99_LIMIT_MS:.0f} ms at {peak['concurrency']} clients"
                + every_service,
                f"{p99:.1f} ms",
                p99 <= CREATE_P99_LIMIT_MS if _finite(p99) else None,
            )
        )
        floor = report.get("floor", {}).get("createTransaction")
        if floor:
            share = peak["createsPerSecond"] / floor["perSecond"]
            verdicts.append(
                Verdict(
                    f"creates/s ≥ {FLOOR_SHARE_LIMIT:.0%} of the create-txn floor",
                    f"{peak['createsPerSecond']:.0f} / {floor['perSecond']:.0f} = {share:.0%}",
                    share >= FLOOR_SHARE_LIMIT,
                )
            )
    if half:
        if report["webhooks"]:
            p99 = half["createdToWebhookMs"]["p99"]
            verdicts.append(
                Verdict(
                    f"created → signed webhook received p99 ≤ {WEBHOOK_P99_LIMIT_MS:.0f} ms "
                    f"at half max throughput ({half['load']})",
                    f"{p99:.1f} ms",
                    p99 <= WEBHOOK_P99_LIMIT_MS if _finite(p99) else None,
                )
            )
        else:
            p99 = half["createdToFinalMs"]["p99"]
            verdicts.append(
                Verdict(
                    f"created → signed webhook received p99 ≤ {WEBHOOK_P99_LIMIT_MS:.0f} ms "
                    "(webhook service not running: created → SUCCESS shown instead)",
                    f"{p99:.1f} ms to SUCCESS",
                    None,
                )
            )
    if soak and soak.get("rss"):
        drifts = {
            name: drift["change"]
            for name, drift in soak["rss"].items()
            if name.startswith(SERVICE_PREFIXES)
        }
        worst = max(drifts.items(), key=lambda item: abs(item[1]), default=None)
        verdicts.append(
            Verdict(
                f"each service's RSS flat (±{RSS_DRIFT_LIMIT:.0%}) over a {soak['durationS']:.0f} s"
                " soak at half max throughput",
                f"worst {worst[0]} {worst[1]:+.1%}" if worst else "no samples",
                all(abs(change) <= RSS_DRIFT_LIMIT for change in drifts.values())
                if drifts
                else None,
            )
        )
    reconciles = [run["reconcile"] for run in report["runs"]]
    verdicts.append(
        Verdict(
            "`payouts reconcile` clean after every run",
            "contracts/reconcile.py not present"
            if any(result is None for result in reconciles)
            else f"{sum(len(result) for result in reconciles)} discrepancies",
            None
            if any(result is None for result in reconciles)
            else all(not result for result in reconciles),
        )
    )
    problems = sum(len(phase["problems"]) for run in report["runs"] for phase in run["phases"])
    verdicts.append(
        Verdict(
            "no non-2xx, no lost payout, no missing webhook",
            f"{problems} problems",
            problems == 0,
        )
    )
    verdicts.append(
        Verdict(
            "`make bench` under 5 minutes",
            f"{report['elapsedS']:.0f} s",
            report["elapsedS"] < 300,
        )
    )
    return verdicts


def as_json(verdicts: list[Verdict]) -> list[dict[str, Any]]:
    return [asdict(verdict) for verdict in verdicts]
