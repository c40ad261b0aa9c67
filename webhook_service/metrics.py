"""Business metrics of the webhook service (FastStream's middleware adds per-queue metrics)."""

from prometheus_client import Counter

from webhook_service.delivery import (
    ALREADY_DELIVERED,
    DELIVERED,
    NO_ENDPOINT,
    Decision,
    Disposition,
)

WEBHOOK_OUTCOMES = Counter(
    "payouts_webhook_outcomes_total",
    "Webhook messages handled, by outcome: delivered, already_delivered, no_endpoint, retry, "
    "parked, dead_lettered",
    ["outcome"],
)
_DONE_OUTCOMES = {
    DELIVERED: "delivered",
    ALREADY_DELIVERED: "already_delivered",
    NO_ENDPOINT: "no_endpoint",
}
_OTHER_OUTCOMES = {
    Disposition.RETRY: "retry",
    Disposition.PARK: "parked",
    Disposition.DEAD_LETTER: "dead_lettered",
}


def count_outcome(decision: Decision) -> None:
    if decision.disposition is Disposition.DONE:
        outcome = _DONE_OUTCOMES.get(decision.reason, "done")
    else:
        outcome = _OTHER_OUTCOMES[decision.disposition]
    WEBHOOK_OUTCOMES.labels(outcome).inc()
