"""The kinds of `scheduled_actions` rows: what is due to happen to a payout at a time of its
merchant's sandbox clock. The API schedules a queued payout's expiry; the processor schedules the
rest, and applies them all (processor_service/scheduler.py)."""

from enum import StrEnum


class Action(StrEnum):
    SCRIPT_STEP = "SCRIPT_STEP"  # the next step of the payout's scripted scenario
    EXPIRE_DECISION = "EXPIRE_DECISION"  # no decision within the window: FAILED
    EXPIRE_QUEUE = "EXPIRE_QUEUE"  # still QUEUED at the end of the queue's wait: FAILED


class Result(StrEnum):
    APPLIED = "APPLIED"
    SKIPPED = "SKIPPED"  # the payout moved on before it came due (a decision, a start, ...)
    ERROR = "ERROR"  # applying it failed for a reason a retry cannot fix (logged)


def correlation_id_of(action_id: int) -> str:
    """The correlation id of what an action does when it comes due (its messages, its log
    lines): no request caused it, the row of `scheduled_actions` did."""
    return f"scheduled-action-{action_id}"
