"""Message bodies that cross RabbitMQ, versioned by `schemaVersion`.

Commands are named in the imperative, events in the past tense. Every text a consumer writes to
the database or looks a row up by is bounded by its column: a 17 MiB merchant id, published by
hand, made a query over the server's packet limit, which drops the connection; taken for an
outage, the message was retried for as long as it ran, never dead-lettered.
"""

from typing import Any, Literal

from pydantic import Field

from contracts.clock import event_sandbox_time
from contracts.db.models import FAILURE_REASON_LENGTH, PSP_REFERENCE_LENGTH
from contracts.domain.statuses import LEGACY_EVENT_NAMES, EventType, PspOutcome
from contracts.payout_view import PayoutView
from contracts.wire import RowId, Timestamp, WireModel


class ProcessPayout(WireModel):
    """Run the scenario rules on a PENDING or RETRY payout, for the attempt it is sent for.

    `attempt` and `holdCycle` (added compatibly to version 1) name that attempt: the payout's
    `attempts` and `holdCycle` when the command was sent. A copy finding them changed (the
    attempt was made, or the payout reinitiated) changes nothing: the command is judged against
    the payout itself, and needs no inbox row. A command without them (sent before they
    existed) is judged by the inbox."""

    schema_version: Literal[1] = 1
    payout_id: RowId
    merchant_id: RowId
    attempt: int | None = Field(default=None, ge=0)
    hold_cycle: int | None = Field(default=None, ge=0)
    # Added compatibly to version 1: absent/null but for an attempt the sandbox clock started (a
    # queued payout that a scheduled step's money started), which carries the sandbox time the
    # step was due at; a script or a decision window runs from it.
    sandbox_time: Timestamp | None = Field(
        default_factory=event_sandbox_time,
        description="The merchant's sandbox time at which its sandbox clock started this attempt; "
        "absent: at the payout's `updatedAt`, on the merchant's clock as it read then",
    )

    @property
    def names_its_attempt(self) -> bool:
        return self.attempt is not None and self.hold_cycle is not None


class ApplyPspOutcome(WireModel):
    """Settle a payout as an IPN or a sandbox simulation said: apply the outcomes accepted for
    attempt `hold_cycle`, in the order they were accepted (version 2 added `holdCycle`)."""

    schema_version: Literal[2] = 2
    callback_event_id: str = Field(min_length=1, max_length=100)
    payout_id: RowId
    merchant_id: RowId
    hold_cycle: int = Field(ge=1)
    outcome: PspOutcome
    psp_reference: str | None = Field(default=None, max_length=PSP_REFERENCE_LENGTH)
    failure_reason: str | None = Field(default=None, max_length=FAILURE_REASON_LENGTH)


class PayoutStatusChanged(WireModel):
    """One event per status change, carrying the payout as it was at that change."""

    schema_version: Literal[1] = 1
    id: str = Field(min_length=1, max_length=40)  # evt_...
    type: EventType
    # The original mock's PAYOUT_CREATED | PAYOUT_UPDATED | PAYOUT_REINITIATED: an enum in the
    # documents (as the OpenAPI's PayoutEventView), a plain string to read.
    event: str = Field(json_schema_extra={"enum": list(LEGACY_EVENT_NAMES)})
    created_at: Timestamp
    merchant_id: RowId
    payout: PayoutView
    # Added compatibly to version 1: absent/null on every change but those the sandbox clock
    # caused (contracts.clock), which carry the sandbox time they were due at.
    sandbox_time: Timestamp | None = Field(
        default_factory=event_sandbox_time,
        description="The merchant's sandbox time of a change its sandbox clock caused (a "
        "scheduled step that came due; test mode only); `createdAt` stays the real time",
    )

    def webhook_body(self) -> dict[str, Any]:
        """The JSON merchants receive: `{id, type, createdAt, event, payout}`, and `sandboxTime`
        when the sandbox clock caused the change."""
        data = self.model_dump(mode="json", by_alias=True)
        body = {key: data[key] for key in ("id", "type", "createdAt", "event", "payout")}
        if self.sandbox_time is not None:
            body["sandboxTime"] = data["sandboxTime"]
        return body
