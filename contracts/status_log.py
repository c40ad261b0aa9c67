"""A line per payout status change, written once the transaction that made it commits: a line
written with the change said a payout moved that a failed COMMIT left where it was, and its
message's next run said so again (diff review). One place for the processor's changes and the
queue's (QUEUED -> PENDING when funds arrive, QUEUED -> FAILED when it waited too long), in
whichever service makes them."""

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from contracts.domain.statuses import PayoutStatus

log = logging.getLogger("payouts.status")

# A payout's final outcomes, logged at INFO; every step on the way is DEBUG.
FINAL_STATUSES = frozenset({PayoutStatus.SUCCESS, PayoutStatus.FAILED, PayoutStatus.REVERSED})
# session.info's key for the changes a transaction made: logged by its commit, dropped by its
# rollback.
_TO_LOG = "payout_status_changes_to_log"


@dataclass(frozen=True)
class StatusChange:
    payout_id: str
    merchant_id: str
    correlation_id: str | None
    from_status: str
    to_status: PayoutStatus
    attempt: int

    def write(self) -> None:
        level = logging.INFO if self.to_status in FINAL_STATUSES else logging.DEBUG
        if not log.isEnabledFor(level):
            return
        log.log(
            level,
            "payout %s -> %s (attempt %d)",
            self.from_status,
            self.to_status.value,
            self.attempt,
            extra={
                "payout_id": self.payout_id,
                "merchant_id": self.merchant_id,
                "correlation_id": self.correlation_id,
                "from_status": self.from_status,
                "to_status": self.to_status.value,
                "attempt": self.attempt,
            },
        )


def log_once_committed(session: AsyncSession, changes: Iterable[StatusChange]) -> None:
    session.info.setdefault(_TO_LOG, []).extend(changes)


@event.listens_for(Session, "after_commit")
def _write_committed(session: Session) -> None:
    for change in session.info.pop(_TO_LOG, ()):
        change.write()


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop(_TO_LOG, None)
