"""Business metrics of the processor and the outbox relay (FastStream's middleware adds the
per-queue message metrics)."""

from collections.abc import Callable

from prometheus_client import Counter, Gauge

from contracts.topology import WorkQueue

PAYOUT_STATUSES = Counter(
    "payouts_status_changes_total",
    "The status a committed change of the processor (a command, a PSP outcome, a scheduled "
    "step of the sandbox clock) left a payout in; a status passed through within one change "
    "(PROCESSING on the way to SUCCESS) is not counted",
    ["status"],
)
MESSAGES = Counter(
    "payouts_processor_messages_total",
    "Consumed messages by result: applied, duplicate, no_change, retried, dead_lettered, "
    "batch_failed (then run alone)",
    ["queue", "result"],
)
OUTBOX_PUBLISHED = Counter("payouts_outbox_published_total", "Outbox rows published and confirmed")
OUTBOX_FAILURES = Counter("payouts_outbox_publish_failures_total", "Outbox publish attempts failed")
OUTBOX_PARKED = Counter(
    "payouts_outbox_parked_total", "Outbox rows parked after their last refused publish"
)
OUTBOX_LAG = Gauge(
    "payouts_outbox_lag_seconds",
    "Age of the oldest outbox row not sent yet, due or backing off (parked rows aside); read "
    "every 5 s",
)
WEBHOOK_RETRIES_RESENT = Counter(
    "payouts_webhook_retries_resent_total",
    "Overdue webhook retries the outbox relay sent again (their message lost, or late)",
)
WEBHOOK_DELIVERIES_RESENT = Counter(
    "payouts_webhook_deliveries_resent_total",
    "Webhook deliveries the outbox relay sent again: events without a delivery row, and PENDING"
    " deliveries no attempt holds (their message dead-lettered, lost or late)",
)
HOUSEKEEPING_FAILURES = Counter(
    "payouts_relay_housekeeping_failures_total",
    "Housekeeping rounds of the outbox relay that failed, by chore (tried again later)",
    ["chore"],
)
PAYOUT_RETRIES_RESENT = Counter(
    "payouts_payout_retries_resent_total",
    "Commands of stalled payouts the outbox relay sent again (in RETRY, or PENDING not submitted,"
    " or with an accepted PSP outcome not applied: their command lost or dead-lettered)",
)


def dead_letters_of(queue: WorkQueue) -> Callable[[], None]:
    """Counts a message of `queue` dead-lettered before it reached the handler."""
    return MESSAGES.labels(queue.name, "dead_lettered").inc
