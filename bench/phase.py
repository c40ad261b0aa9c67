"""One measured phase: offered load for a while, then wait for every payout to settle (and every
webhook to arrive), then read back what happened and boil it down to figures and problems."""

import math
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bench.load import CreateResult
from bench.observe import PayoutOutcome, Receipt
from bench.sampler import Sample, core_wait_share, cpu_share, rss_drift
from bench.stages import StatementCounts, counts_per_payout
from bench.stats import LatencySummary, per_second, percentile_per_second, rate


class LoadKind(StrEnum):
    CLOSED = "closed"  # a fixed number of clients
    OPEN = "open"  # a fixed offered rate
    BATCH = "batch"  # a payroll through the batch endpoint


@dataclass(frozen=True)
class PhaseSpec:
    name: str
    # peak (max throughput), hot (peak's clients on one merchant), half (latency at half of the
    # peak), soak (memory), batch (a payroll through the batch endpoint)
    role: str
    kind: LoadKind
    duration: float  # batch: 0, it lasts as long as its requests
    warmup: float  # seconds at the start left out of the figures
    concurrency: int = 0
    rate: float = 0.0
    watch_memory: bool = False
    merchants: int = 0  # how many of the merchants the clients take in turn (0: all)
    payouts: int = 0  # batch: the payroll's size
    chunk: int = 0  # batch: items per request

    @property
    def requests(self) -> int:
        """batch: how many requests carry the payroll."""
        return math.ceil(self.payouts / self.chunk) if self.chunk else 0

    @property
    def load(self) -> str:
        if self.kind is LoadKind.BATCH:
            return (
                f"{self.payouts:,} payouts in {self.requests} requests of ≤ {self.chunk:,}, "
                "one after another, 1 merchant"
            )
        if self.kind is LoadKind.CLOSED:
            merchants = f", {self.merchants} merchant{'s' * (self.merchants > 1)}"
            return f"{self.concurrency} clients{merchants if self.merchants else ''}"
        return f"{self.rate:.1f} creates/s offered"


@dataclass
class PhaseData:
    spec: PhaseSpec
    started_at: float
    ended_at: float
    drain_seconds: float
    creates: list[CreateResult]
    outcomes: dict[str, PayoutOutcome]
    receipts: list[Receipt]
    malformed_webhooks: int
    expected_events: set[str]
    outbox_sent_in_window: int
    webhooks: bool
    resources: dict[str, list[Sample]]
    database: dict[str, int]  # server counters' change over the phase
    statements: dict[str, StatementCounts]  # per stage (service user); empty: not counted
    steal: float  # share of the machine's CPU time stolen from start to end of the drain
    exited: dict[str, int]  # services that died (name: exit code)
    lock_waits: list[dict[str, Any]]  # sampled row-lock waits (profiled phases only)

    @property
    def window(self) -> tuple[float, float]:
        return self.started_at + self.spec.warmup, self.ended_at

    @property
    def window_seconds(self) -> float:
        start, end = self.window
        return end - start

    def in_window(self, moment: float) -> bool:
        start, end = self.window
        return start <= moment < end

    def succeeded_receipts(self) -> dict[str, Receipt]:
        """The first payout.succeeded webhook of each payout."""
        first: dict[str, Receipt] = {}
        for receipt in sorted(self.receipts, key=lambda r: r.received_at):
            if receipt.type == "payout.succeeded":
                first.setdefault(receipt.payout_id, receipt)
        return first

    def end_to_end_at(self) -> dict[str, float]:
        """When each payout of this phase was done for its merchant: its payout.succeeded
        webhook arrived, or (no webhook service) its SUCCESS was recorded. A late webhook of an
        earlier phase's payout is not this phase's work."""
        if self.webhooks:
            return {
                pid: r.received_at
                for pid, r in self.succeeded_receipts().items()
                if pid in self.outcomes
            }
        return {pid: o.final_at for pid, o in self.outcomes.items() if o.final_at is not None}


def _ms(summary: LatencySummary) -> dict[str, float]:
    """Unrounded, as every figure a target judges (a p99 of 25.004 ms was judged 25.0, and met):
    the report rounds what it shows."""
    return {name: value for name, value in summary.__dict__.items() if name != "count"} | {
        "count": summary.count
    }


def problems(data: PhaseData) -> list[str]:
    """What fails the run: any non-2xx, any lost payout, any missing or badly signed webhook."""
    found = [f"service {name} exited with {code}" for name, code in data.exited.items()]
    statuses = Counter(result.status for result in data.creates if not result.ok)
    if statuses:
        found.append(f"{sum(statuses.values())} creates failed: {dict(statuses)}")
        first_error = next(result.error for result in data.creates if not result.ok)
        found.append(f"first failure: {first_error}")
    created = [result.payout_id for result in data.creates if result.payout_id]
    lost = [
        payout_id
        for payout_id in created
        if (outcome := data.outcomes.get(payout_id)) is None or outcome.status != "SUCCESS"
    ]
    if lost:
        found.append(f"{len(lost)} payouts did not reach SUCCESS (e.g. {lost[0]})")
    if data.webhooks:
        received = {receipt.webhook_id for receipt in data.receipts}
        missing = data.expected_events - received
        if missing:
            found.append(
                f"{len(missing)} webhooks had not arrived {data.drain_seconds:.0f} s after the "
                f"load ended, when the drain stopped waiting (e.g. {min(missing)})"
            )
        unsigned = sum(not receipt.signature_valid for receipt in data.receipts)
        if unsigned:
            found.append(f"{unsigned} webhooks failed signature verification")
        if data.malformed_webhooks:
            found.append(f"{data.malformed_webhooks} webhook bodies were malformed")
    return found


def summarize(data: PhaseData) -> dict[str, Any]:
    window = data.window_seconds
    ok = [result for result in data.creates if result.ok]
    in_window = [result for result in ok if data.in_window(result.sent_at)]
    created_in_window = {
        payout_id: outcome
        for payout_id, outcome in data.outcomes.items()
        if data.in_window(outcome.created_at)
    }
    to_final = [
        outcome.final_at - outcome.created_at
        for outcome in created_in_window.values()
        if outcome.final_at is not None
    ]
    summary: dict[str, Any] = {
        "name": data.spec.name,
        "role": data.spec.role,
        "kind": data.spec.kind.value,
        "load": data.spec.load,
        "concurrency": data.spec.concurrency,
        "offeredRate": data.spec.rate,
        "durationS": round(data.ended_at - data.started_at, 2),
        "warmupS": data.spec.warmup,
        "windowS": round(window, 2),
        "drainS": round(data.drain_seconds, 2),
        "requests": len(data.creates),
        "created": len(ok),
        "non2xx": dict(Counter(str(r.status) for r in data.creates if not r.ok)),
        "createsPerSecond": rate(sum(data.in_window(result.answered_at) for result in ok), window),
        "createLatencyMs": _ms(LatencySummary.of_seconds(r.latency for r in in_window)),
        # Percentiles of the creates answered 2xx: those that failed are not in them.
        "createsFailed": sum(
            data.in_window(result.sent_at) for result in data.creates if not result.ok
        ),
        "createdToFinalMs": _ms(LatencySummary.of_seconds(to_final)),
        "brokerMessagesPerSecond": round(rate(data.outbox_sent_in_window, window), 1),
        "databasePerPayout": {
            name: round(value / len(ok), 2) if ok else math.nan
            for name, value in data.database.items()
        },
        "statementsPerPayout": counts_per_payout(data.statements, len(ok)),
        "stealShare": round(data.steal, 4),
        "webhooks": data.webhooks,
        "problems": problems(data),
        "cpuPercentOfOneCore": {
            name: round(share, 1) for name, share in cpu_share(data.resources).items()
        },
        "coreWaitPercent": {
            name: round(share, 1) for name, share in core_wait_share(data.resources).items()
        },
    }
    if data.webhooks:
        succeeded = [
            receipt
            for payout_id, receipt in data.succeeded_receipts().items()
            if payout_id in created_in_window
        ]
        summary["finalToWebhookMs"] = _ms(
            LatencySummary.of_seconds(r.received_at - r.event_created_at for r in succeeded)
        )
        summary["createdToWebhookMs"] = _ms(
            LatencySummary.of_seconds(r.received_at - r.payout_created_at for r in succeeded)
        )
        # Percentiles of the webhooks that came: those that never did are not in them.
        summary["webhooksMissing"] = len(created_in_window) - len(succeeded)
        summary["webhookTraffic"] = {
            "received": len(data.receipts),
            "duplicates": len(data.receipts) - len({r.webhook_id for r in data.receipts}),
            "connections": len({r.client_port for r in data.receipts}),
        }
        summary["endToEndBasis"] = "payout.succeeded webhook received"
    else:
        summary["endToEndBasis"] = "SUCCESS recorded (no webhook service)"
    arrivals = data.end_to_end_at()
    summary["endToEndPerSecond"] = rate(
        sum(data.in_window(moment) for moment in arrivals.values()), window
    )
    if data.spec.kind is LoadKind.BATCH:
        summary["batch"] = batch_figures(data, arrivals)
    if data.lock_waits:
        summary["lockWaits"] = data.lock_waits
    if data.spec.watch_memory:
        summary["rss"] = {
            name: drift
            for name, series in data.resources.items()
            if (drift := rss_drift(series)) is not None
        }
    return summary


def batch_figures(data: PhaseData, arrivals: dict[str, float]) -> dict[str, Any]:
    """Wall time (first request sent to last answer) and time to the last payout done (first
    request sent to its last payout.succeeded webhook; None while one is missing)."""
    first_sent = min((result.sent_at for result in data.creates), default=math.nan)
    last_answer = max((result.answered_at for result in data.creates), default=math.nan)
    payout_ids = {result.payout_id for result in data.creates if result.payout_id}
    done = [arrivals[pid] for pid in payout_ids if pid in arrivals]
    return {
        "payouts": data.spec.payouts,
        "requests": data.spec.requests,
        "chunk": data.spec.chunk,
        "created": len(payout_ids),
        "wallS": round(last_answer - first_sent, 2),
        "toLastEndToEndS": round(max(done) - first_sent, 2)
        if done and len(done) == len(payout_ids) == data.spec.payouts
        else None,
    }


def timeline(data: PhaseData) -> dict[str, Any]:
    """Per-second series from the phase's start to the end of its drain."""
    start = data.started_at
    end = max(data.ended_at + data.drain_seconds, start + 1)
    ok = [result for result in data.creates if result.ok]
    finals = [o for o in data.outcomes.values() if o.final_at is not None]
    succeeded = list(data.succeeded_receipts().values())
    series: dict[str, Any] = {
        "start": start,
        "loadEndsAt": data.ended_at - start,
        "creates": per_second((r.answered_at for r in ok), start, end),
        "finals": per_second((o.final_at for o in finals if o.final_at), start, end),
        "createP50": _clean(
            percentile_per_second(((r.sent_at, r.latency) for r in ok), start, end, 0.5)
        ),
        "createP99": _clean(
            percentile_per_second(((r.sent_at, r.latency) for r in ok), start, end, 0.99)
        ),
        "createdToFinalP99": _clean(
            percentile_per_second(
                ((o.created_at, o.final_at - o.created_at) for o in finals if o.final_at),
                start,
                end,
                0.99,
            )
        ),
    }
    if data.webhooks:
        series["webhooks"] = per_second((r.received_at for r in succeeded), start, end)
        series["createdToWebhookP99"] = _clean(
            percentile_per_second(
                ((r.payout_created_at, r.received_at - r.payout_created_at) for r in succeeded),
                start,
                end,
                0.99,
            )
        )
    return series


def _clean(values: list[float]) -> list[float | None]:
    """JSON has no NaN."""
    return [None if math.isnan(value) else round(value, 2) for value in values]
