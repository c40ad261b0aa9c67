"""Business metrics of the webhook service (FastStream's middleware adds per-queue metrics)."""

from prometheus_client import Counter

from contracts.webhook_chaos import ChaosKind
from webhook_service.delivery import (
    ALREADY_DELIVERED,
    ALREADY_PARKED,
    DELIVERED,
    DUPLICATE,
    ENDPOINT_BUSY,
    LEASED_ELSEWHERE,
    NO_ENDPOINT,
    SECRETS_NOT_OPENED,
    SUPERSEDED,
    Decision,
    Disposition,
)

WEBHOOK_OUTCOMES = Counter(
    "payouts_webhook_outcomes_total",
    "Webhook messages handled, by outcome: delivered, already_delivered, already_parked, "
    "no_endpoint, secrets_not_opened, duplicate, leased_elsewhere, endpoint_busy, "
    "database_wait, superseded, retry (an attempt failed), parked, dead_lettered",
    ["outcome"],
)
_OUTCOME_OF_REASON = {
    DELIVERED: "delivered",
    ALREADY_DELIVERED: "already_delivered",
    ALREADY_PARKED: "already_parked",
    NO_ENDPOINT: "no_endpoint",
    SECRETS_NOT_OPENED: "secrets_not_opened",
    DUPLICATE: "duplicate",
    LEASED_ELSEWHERE: "leased_elsewhere",
    ENDPOINT_BUSY: "endpoint_busy",
    SUPERSEDED: "superseded",
}
_OUTCOME_OF_DISPOSITION = {
    Disposition.DONE: "done",
    Disposition.RETRY: "retry",
    Disposition.PARK: "parked",
    Disposition.DEAD_LETTER: "dead_lettered",
}


WEBHOOK_CHAOS_ATTEMPTS = Counter(
    "payouts_webhook_chaos_attempts_total",
    "Webhook attempts that sandbox webhook chaos changed, by kind: "
    + ", ".join(kind.value for kind in ChaosKind),
    ["kind"],
)


def count_outcome(decision: Decision) -> None:
    """`retry` is an attempt that failed; a message sent back with no attempt made (no failure
    of it) has the reason it waits for (a database outage's: database_wait)."""
    outcome = _OUTCOME_OF_REASON.get(decision.reason) or (
        _OUTCOME_OF_DISPOSITION[decision.disposition] if decision.failed else "database_wait"
    )
    WEBHOOK_OUTCOMES.labels(outcome).inc()
    for kind in decision.chaos:
        WEBHOOK_CHAOS_ATTEMPTS.labels(kind.value).inc()


def count_dead_letter() -> None:
    """A message dead-lettered before it reached the handler (a body that is no event)."""
    WEBHOOK_OUTCOMES.labels(_OUTCOME_OF_DISPOSITION[Disposition.DEAD_LETTER]).inc()
