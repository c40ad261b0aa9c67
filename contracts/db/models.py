"""SQLAlchemy 2 typed models. Money is DECIMAL(18,2); times are UTC DATETIME(6)."""

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.mysql import DATETIME as MYSQL_DATETIME
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, undefer_group

from contracts.db.sealed import SealedSecret

Money = Numeric(18, 2, asdecimal=True)
Timestamp = DateTime().with_variant(MYSQL_DATETIME(fsp=6), "mysql")
Uuid = String(36)
# Identifiers the caller chooses (a merchant's reference, a PSP's event id and reference) are
# matched byte for byte: under the table's default collation (utf8mb4_general_ci on MariaDB,
# utf8mb4_0900_ai_ci on MySQL 8) "CASE-x" and "case-x" were one key (migration 0016).
EXACT = "utf8mb4_bin"
CORRELATION_ID_LENGTH = 100  # an X-Request-ID's; an AMQP correlation id is cut to it


class Base(DeclarativeBase):
    pass


def table_of(model: type[Base]) -> Table:
    """A model's Core table: a Core INSERT skips the ORM's bulk machinery on the hot paths (and
    keeps the cursor's lastrowid)."""
    return cast(Table, model.__table__)


MERCHANT_NAME_LENGTH = 200
# A PSP's reference and a failure reason: the columns, and so what the IPN and the messages
# carrying them take.
PSP_REFERENCE_LENGTH = 64
FAILURE_REASON_LENGTH = 255


_WEBHOOK_SECRET: dict[str, Any] = {
    "deferred": True,
    "deferred_group": "webhook_secrets",
    "deferred_raiseload": True,  # read without WITH_WEBHOOK_SECRETS: an error, not a lazy load
}
WITH_WEBHOOK_SECRETS = undefer_group("webhook_secrets")


class Merchant(Base):
    __tablename__ = "merchants"

    id: Mapped[str] = mapped_column(Uuid, primary_key=True)
    name: Mapped[str] = mapped_column(String(MERCHANT_NAME_LENGTH))
    api_key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    # Sealed at rest (migration 0036): read and written as the secret itself. Loaded only where
    # asked for (WITH_WEBHOOK_SECRETS): every request loaded them with its merchant, so a secret
    # no key opened failed all its merchant's calls, and the API's merchant cache held them all
    # in the clear (secrets review).
    webhook_secret: Mapped[str] = mapped_column(SealedSecret, **_WEBHOOK_SECRET)
    previous_webhook_secret: Mapped[str | None] = mapped_column(SealedSecret, **_WEBHOOK_SECRET)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # When the secret last rotated (migration 0024): the attempts before it were signed with the
    # previous secret, and its grace may have been any length.
    secret_rotated_at: Mapped[datetime | None] = mapped_column(Timestamp)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    # Where the go-live readiness report starts counting (migration 0031); None: from the start.
    readiness_since: Mapped[datetime | None] = mapped_column(Timestamp)


class Balance(Base):
    """The merchant's two ledger accounts, kept equal to the sum of their ledger lines."""

    __tablename__ = "balances"

    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), default="PKR")
    available: Mapped[Decimal] = mapped_column(Money)
    held: Mapped[Decimal] = mapped_column(Money)
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)


class Payout(Base):
    __tablename__ = "payouts"
    __table_args__ = (
        UniqueConstraint("merchant_id", "merchant_reference", name="uq_payouts_merchant_reference"),
        Index("ix_payouts_merchant_created", "merchant_id", "created_at", "id"),
        Index("ix_payouts_merchant_status_created", "merchant_id", "status", "created_at"),
        Index("ix_payouts_status_updated", "status", "updated_at"),
        # An IPN's pspReference that names another payout (migration 0025).
        Index("ix_payouts_psp_reference", "psp_reference"),
        # The readiness report's scenario counts, from the index alone (migration 0035).
        Index(
            "ix_payouts_readiness",
            "merchant_id",
            "created_at",
            "status",
            "amount",
            "account_number",
            "failure_code",
            "hold_cycle",
        ),
    )

    id: Mapped[str] = mapped_column(Uuid, primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"))
    merchant_reference: Mapped[str] = mapped_column(String(64, collation=EXACT))
    amount: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3))
    dest_type: Mapped[str] = mapped_column(String(10))
    bank_code: Mapped[str | None] = mapped_column(String(20))
    wallet_code: Mapped[str | None] = mapped_column(String(20))
    account_number: Mapped[str] = mapped_column(String(34))
    account_title: Mapped[str] = mapped_column(String(100))
    purpose: Mapped[str | None] = mapped_column(String(140))
    status: Mapped[str] = mapped_column(String(20))
    failure_reason: Mapped[str | None] = mapped_column(String(FAILURE_REASON_LENGTH))
    failure_code: Mapped[str | None] = mapped_column(String(50))
    psp_reference: Mapped[str | None] = mapped_column(String(PSP_REFERENCE_LENGTH))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Incremented by every hold (create, reinitiate): a hold is posted or released once per cycle.
    hold_cycle: Mapped[int] = mapped_column(Integer, default=1)
    # The newest PSP outcome accepted (IPN, simulation) but not yet applied by the processor:
    # the next callback is judged against it rather than against `status`.
    accepted_outcome: Mapped[str | None] = mapped_column(String(20))
    processed_at: Mapped[datetime | None] = mapped_column(Timestamp)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)
    # Created several at once (a payroll's chunk of more than one): its commands and events take
    # the bulk queues for its whole life (contracts/payout_events.py).
    in_bulk: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("0"))


class LedgerJournal(Base):
    """One money movement; its lines sum to zero."""

    __tablename__ = "ledger_journals"
    __table_args__ = (
        # Each hold of a payout is posted out or released at most once.
        UniqueConstraint("payout_id", "hold_cycle", "kind", name="uq_journal_payout_cycle_kind"),
        # The merchant's reinitiations since a time, with their payouts (migration 0035).
        Index(
            "ix_journals_merchant_kind",
            "merchant_id",
            "kind",
            "hold_cycle",
            "created_at",
            "payout_id",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"))
    payout_id: Mapped[str | None] = mapped_column(ForeignKey("payouts.id"))
    hold_cycle: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(20))
    description: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class LedgerLine(Base):
    __tablename__ = "ledger_lines"
    __table_args__ = (Index("ix_ledger_lines_merchant_id", "merchant_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    journal_id: Mapped[int] = mapped_column(ForeignKey("ledger_journals.id"))
    # NULL for the shared psp_settlement account.
    merchant_id: Mapped[str | None] = mapped_column(ForeignKey("merchants.id"))
    account: Mapped[str] = mapped_column(String(20))
    amount: Mapped[Decimal] = mapped_column(Money)
    balance_after: Mapped[Decimal | None] = mapped_column(Money)
    available_after: Mapped[Decimal | None] = mapped_column(Money)
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class OutboxMessage(Base):
    """A message written in the same transaction as the change it announces."""

    __tablename__ = "outbox"
    # The relay's claim in index order: unsent, unparked, due, earliest due first.
    __table_args__ = (Index("ix_outbox_claim", "sent_at", "parked_at", "next_attempt_at", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    exchange: Mapped[str] = mapped_column(String(100))
    routing_key: Mapped[str] = mapped_column(String(200))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[dict[str, Any]] = mapped_column(JSON)
    correlation_id: Mapped[str | None] = mapped_column(String(CORRELATION_ID_LENGTH))
    delay_ms: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    sent_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # Publishes the broker refused (returned or nacked), capped at the relay's limit.
    publish_attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(500))
    # A row never tried is due since the epoch, so it goes before rows backing off.
    next_attempt_at: Mapped[datetime] = mapped_column(
        Timestamp, server_default="1970-01-01 00:00:00"
    )
    # Set after the last attempt: the relay skips the row until an operator retries it.
    parked_at: Mapped[datetime | None] = mapped_column(Timestamp)


class ProcessedMessage(Base):
    """Consumer inbox: a message id recorded in the transaction that applied it."""

    __tablename__ = "processed_messages"
    # Housekeeping deletes by age.
    __table_args__ = (Index("ix_processed_messages_processed_at", "processed_at"),)

    consumer: Mapped[str] = mapped_column(String(50), primary_key=True)
    # As AMQP allows (255 characters, case-sensitive: migration 0023).
    message_id: Mapped[str] = mapped_column(String(255, collation=EXACT), primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(Timestamp)


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_expires", "expires_at"),)

    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(36), primary_key=True)
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(500))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(SmallInteger)
    # MEDIUMBLOB: a payroll batch's answer is about half a megabyte (migration 0010).
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary(16 * 1024 * 1024 - 1))
    locked_at: Mapped[datetime] = mapped_column(Timestamp)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    expires_at: Mapped[datetime] = mapped_column(Timestamp)


class UsageCounter(Base):
    """A merchant's hits in the current fixed window of one meter (requests per second,
    idempotency keys per day). One row per merchant and meter, reset when a new window starts."""

    __tablename__ = "usage_counters"

    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), primary_key=True)
    meter: Mapped[str] = mapped_column(String(32), primary_key=True)
    window_index: Mapped[int] = mapped_column(BigInteger)
    hits: Mapped[int] = mapped_column(BigInteger)


class PspCallback(Base):
    """An IPN or sandbox simulation, recorded once per event id, applied in `accept_seq` order."""

    __tablename__ = "psp_callbacks"
    __table_args__ = (
        Index("ix_psp_callbacks_payout_seq", "payout_id", "accept_seq"),
        Index("ix_psp_callbacks_unapplied", "applied_at", "received_at"),
        # An IPN's pspReference that another payout's accepted outcome named (migration 0025).
        Index("ix_psp_callbacks_psp_reference", "psp_reference"),
    )

    event_id: Mapped[str] = mapped_column(String(100, collation=EXACT), primary_key=True)
    payout_id: Mapped[str] = mapped_column(ForeignKey("payouts.id"))
    hold_cycle: Mapped[int] = mapped_column(Integer)
    # The database's counter: the order outcomes were accepted in, whatever the hosts' clocks.
    accept_seq: Mapped[int] = mapped_column(BigInteger, autoincrement=True, unique=True)
    applied_at: Mapped[datetime | None] = mapped_column(Timestamp)
    outcome: Mapped[str] = mapped_column(String(20))
    # Compared with an IPN's pspReference to spot an earlier attempt's (STALE_PSP_REFERENCE).
    psp_reference: Mapped[str | None] = mapped_column(String(PSP_REFERENCE_LENGTH, collation=EXACT))
    failure_reason: Mapped[str | None] = mapped_column(String(FAILURE_REASON_LENGTH))
    source: Mapped[str] = mapped_column(String(20))
    received_at: Mapped[datetime] = mapped_column(Timestamp)


class PspReferenceClaim(Base):
    """The first payout an accepted PSP outcome named a reference for. Its primary key makes two
    callbacks naming one reference for two payouts at once wait for each other, so the second
    sees the first's outcome and is refused (each locks only its own payout)."""

    __tablename__ = "psp_reference_claims"

    psp_reference: Mapped[str] = mapped_column(
        String(PSP_REFERENCE_LENGTH, collation=EXACT), primary_key=True
    )
    payout_id: Mapped[str] = mapped_column(Uuid)


class PayoutEvent(Base):
    """The merchant's event log (`GET /events`): the payout as it was at each change."""

    __tablename__ = "payout_events"
    __table_args__ = (
        Index("ix_events_merchant_created", "merchant_id", "created_at"),
        # The relay's sweep of events no delivery row was made for (migration 0020).
        Index("ix_events_created", "created_at"),
        # Whether a payout showed a status, and when, from the index alone (migration 0037).
        Index("ix_events_payout_type_time", "payout_id", "type", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"))
    payout_id: Mapped[str] = mapped_column(ForeignKey("payouts.id"))
    type: Mapped[str] = mapped_column(String(40))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", name="uq_webhook_delivery_event"),
        # A merchant's deliveries since a time, with their status (readiness, migration 0040).
        Index("ix_deliveries_merchant_created_status", "merchant_id", "created_at", "status"),
        Index("ix_deliveries_status", "status"),
        # A merchant's retries due by its sandbox time (the clock's advance, migration 0015).
        Index("ix_deliveries_retry_due", "merchant_id", "status", "next_attempt_at"),
        # A merchant's deliveries of an event since a time, with their payouts (migration 0035).
        Index(
            "ix_deliveries_merchant_event",
            "merchant_id",
            "event_type",
            "created_at",
            "delivered_at",
            "payout_id",
        ),
    )

    id: Mapped[str] = mapped_column(Uuid, primary_key=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("payout_events.id"))
    # Copied from the event, without foreign keys: checking one locked the hot payout row
    # (migration 0004).
    merchant_id: Mapped[str] = mapped_column(Uuid)
    payout_id: Mapped[str] = mapped_column(Uuid)
    event_type: Mapped[str] = mapped_column(String(40))
    url: Mapped[str | None] = mapped_column(String(2048))
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(SmallInteger)
    last_error: Mapped[str | None] = mapped_column(String(500))
    # When a RETRYING delivery's next attempt is due, on the merchant's sandbox clock (the
    # database's clock when the merchant never advanced it); its waiting message carries it.
    next_attempt_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # The retry count that waiting message carries (migration 0015).
    retry_count: Mapped[int | None] = mapped_column(Integer)
    # The due time a copy of that waiting message was last sent for, and when (database clock;
    # contracts/waiting_retries.py, migration 0017).
    copied_due_at: Mapped[datetime | None] = mapped_column(Timestamp)
    copied_at: Mapped[datetime | None] = mapped_column(Timestamp)
    delivered_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # Counters, not times, decide whether a resend was honoured: the API and the webhook
    # service run on different clocks (migration 0008). Each resend increments `generation`;
    # a successful attempt records the generation it honoured.
    generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    delivered_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The attempt under way (migration 0009): the consumer that will send holds the lease until
    # it records the attempt; `leased_until` is on the database's clock, and once it has passed
    # (the consumer died) another consumer may take the delivery over.
    lease_token: Mapped[str | None] = mapped_column(String(32))
    leased_until: Mapped[datetime | None] = mapped_column(Timestamp)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"
    __table_args__ = (
        Index("ix_attempts_delivery", "delivery_id", "attempt_number"),
        # How a delivery's attempts since a time were answered, from the index alone (0035).
        Index(
            "ix_attempts_delivery_answer",
            "delivery_id",
            "created_at",
            "chaos",
            "status_code",
            "latency_ms",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_deliveries.id"))
    attempt_number: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(String(2048))
    status_code: Mapped[int | None] = mapped_column(SmallInteger)
    latency_ms: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))
    response_excerpt: Mapped[str | None] = mapped_column(Text)
    # What sandbox webhook chaos did to this attempt (contracts.webhook_chaos.ChaosKind), if any.
    chaos: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class DirectoryInstitution(Base):
    __tablename__ = "directory_institutions"

    code: Mapped[str] = mapped_column(String(20), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))  # BANK or WALLET
    name: Mapped[str] = mapped_column(String(200))
    iban_code: Mapped[str | None] = mapped_column(String(4))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)


class SandboxFaultSetting(Base):
    """A merchant-wide injected fault (PUT /sandbox/faults): `fault` on `percent` % of the
    merchant's API calls (migration 0011)."""

    __tablename__ = "sandbox_fault_settings"

    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), primary_key=True)
    fault: Mapped[str] = mapped_column(String(40))
    percent: Mapped[int] = mapped_column(SmallInteger)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)


class WebhookChaosSetting(Base):
    """How the webhook service misbehaves towards this merchant's endpoint (PUT
    /sandbox/webhook-chaos; migration 0011). Zero / false: behave."""

    __tablename__ = "webhook_chaos_settings"

    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), primary_key=True)
    duplicate_percent: Mapped[int] = mapped_column(SmallInteger, default=0)
    out_of_order: Mapped[bool] = mapped_column(Boolean, default=False)
    delay_seconds: Mapped[int] = mapped_column(SmallInteger, default=0)
    stale_timestamp_percent: Mapped[int] = mapped_column(SmallInteger, default=0)
    old_secret_only: Mapped[bool] = mapped_column(Boolean, default=False)
    fail_first_attempts: Mapped[int] = mapped_column(SmallInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)


# GET /api/v1/requests lists a week of calls; the relay's clean-up deletes older ones.
REQUEST_LOG_RETENTION = timedelta(days=7)


class ApiRequestRecord(Base):
    """The request log (GET /requests): one row per authenticated merchant API call, bodies
    with account numbers and secrets masked, kept `REQUEST_LOG_RETENTION` (migration 0011)."""

    __tablename__ = "api_requests"
    __table_args__ = (
        # A merchant's calls newest first by when they started (migration 0026).
        Index("ix_api_requests_merchant_started", "merchant_id", "started_at", "id"),
        Index("ix_api_requests_started_at", "started_at"),
        # The readiness report's evidence: the calls behind a fault, or answered 429 (0035).
        Index("ix_api_requests_merchant_fault", "merchant_id", "fault", "method", "started_at"),
        Index("ix_api_requests_merchant_status", "merchant_id", "status", "started_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    merchant_id: Mapped[str] = mapped_column(Uuid)
    request_id: Mapped[str] = mapped_column(String(100))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(500))
    status: Mapped[int | None] = mapped_column(SmallInteger)  # None: the connection was dropped
    latency_ms: Mapped[int] = mapped_column(Integer)
    idempotency_key: Mapped[str | None] = mapped_column(String(100))
    replayed: Mapped[bool] = mapped_column(Boolean, default=False)
    fault: Mapped[str | None] = mapped_column(String(40))
    # The status the API answered before `timeout-after-commit` replaced it (migration 0030).
    lost_status: Mapped[int | None] = mapped_column(SmallInteger)
    retry_after_seconds: Mapped[int | None] = mapped_column(Integer)
    request_body: Mapped[str | None] = mapped_column(Text)
    response_body: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(Timestamp)
    # The body's fingerprint as idempotency takes it (SHA-256 of its canonical JSON), before
    # masking: the readiness report tells a request's retry from another request by it (masked,
    # two accounts ending alike read the same).
    request_digest: Mapped[str | None] = mapped_column(String(64))


class SandboxClock(Base):
    """A merchant's sandbox clock (POST /sandbox/clock/advance; migration 0014): its sandbox
    time is the database's clock plus `offset_seconds`, which only grows."""

    __tablename__ = "sandbox_clocks"

    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), primary_key=True)
    offset_seconds: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)  # the last advance


class SandboxClockAdvance(Base):
    """Each advance of a merchant's clock (migration 0029): from `advanced_at` (real time) on,
    the clock read `offset_seconds` ahead, until the next. What the clock read at a moment in
    the past: when a payout picked up late started, what was late before an advance."""

    __tablename__ = "sandbox_clock_advances"
    __table_args__ = (
        Index("ix_sandbox_clock_advances_merchant", "merchant_id", "advanced_at", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    merchant_id: Mapped[str] = mapped_column(Uuid)
    advanced_at: Mapped[datetime] = mapped_column(Timestamp)
    offset_seconds: Mapped[int] = mapped_column(BigInteger)


class ScheduledAction(Base):
    """Something due to happen to a payout at a sandbox time (migration 0014): a scripted
    scenario's next step, the expiry of an ON_HOLD / IN_REVIEW payout's decision window, or of a
    QUEUED payout's wait (written by the API; migration 0022).
    The processor claims it once due (`due_at` <= the merchant's sandbox time) with SKIP LOCKED
    and applies it in one transaction with its effects, recording `applied_at` and `result`.
    It applies only if the payout is still in `expected_status` of attempt `hold_cycle`; else it
    is skipped. No foreign keys: the row is written while the payout's row is locked."""

    __tablename__ = "scheduled_actions"
    __table_args__ = (
        # The claim: not applied, earliest due first.
        Index("ix_scheduled_actions_claim", "applied_at", "due_at"),
        Index("ix_scheduled_actions_merchant", "merchant_id", "applied_at", "due_at"),
        # The merchants with actions to apply, and each one's first due, by a loose index scan.
        Index("ix_scheduled_actions_pending_merchant", "applied_at", "merchant_id", "due_at"),
        # Whether a payout's attempt is scripted (processor_service/stalled_payouts.py).
        Index("ix_scheduled_actions_payout", "payout_id", "hold_cycle"),
        Index("ix_scheduled_actions_result", "result", "applied_at"),  # failed ones (ERROR)
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    merchant_id: Mapped[str] = mapped_column(Uuid)
    payout_id: Mapped[str] = mapped_column(Uuid)
    hold_cycle: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(30))  # contracts.domain.scheduled_actions.Action
    step: Mapped[int | None] = mapped_column(SmallInteger)  # a script's step number
    expected_status: Mapped[str] = mapped_column(String(20))
    due_at: Mapped[datetime] = mapped_column(Timestamp)  # sandbox time
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    applied_at: Mapped[datetime | None] = mapped_column(Timestamp)  # real time
    result: Mapped[str | None] = mapped_column(String(20))  # APPLIED | SKIPPED | ERROR
    status_after: Mapped[str | None] = mapped_column(String(20))


class LedgerAudit(Base):
    """The last audit of the whole ledger, one row (id 1; migration 0032): claimed by a relay
    (`claimed_at`, the database's clock), or written by `payouts reconcile`; `as_of`, when its
    snapshot began, orders overlapping audits (migration 0033)."""

    __tablename__ = "ledger_audits"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    claimed_at: Mapped[datetime | None] = mapped_column(Timestamp)
    as_of: Mapped[datetime | None] = mapped_column(Timestamp)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)
    took_ms: Mapped[int | None] = mapped_column(Integer)
    problem_count: Mapped[int] = mapped_column(Integer, default=0)
    problems: Mapped[list[str] | None] = mapped_column(JSON)  # the first KEPT_PROBLEMS


class DeploymentKey(Base):
    """A secret of this deployment that no setting carries, made once by a migration (0039):
    `public-ids` keys the ids merchants see of shared counters (contracts.public_ids)."""

    __tablename__ = "deployment_keys"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary(64))
