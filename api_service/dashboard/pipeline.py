"""Pipeline health for operators: what `payouts reconcile` checks (the last audit of the ledger's
invariants, which the outbox relay runs every 10 minutes; stuck payouts, PSP outcomes accepted and
not applied, outbox lag, parked outbox rows, webhooks no attempt took up), parked webhook
deliveries, and the dead letters waiting in each queue, with links to the RabbitMQ management
UI. Read-only, except re-driving a dead-letter queue, which is `payouts dlq redrive` itself
(contracts/dead_letters.py)."""

import asyncio
import logging
from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from aio_pika.exceptions import AMQPError

from api_service.errors import ApiError, ServiceUnavailable
from contracts.amqp_connection import CONNECT_TIMEOUT_SECONDS, connect
from contracts.clock import MerchantTime
from contracts.db.engine import SessionFactory, begin_snapshot
from contracts.dead_letters import UnreadableDeadLetter, redrive
from contracts.ledger_audit import LastAudit, last_audit
from contracts.pipeline_health import Thresholds, count_parked_deliveries, pipeline_problems
from contracts.settings import Settings
from contracts.topology import WEBHOOK_PARKING_LOT, all_work_queues

REDRIVE_LIMIT = 1000
BROKER_UNAVAILABLE = "RabbitMQ did not answer; retry later"

log = logging.getLogger("api")


@dataclass(frozen=True)
class QueueCount:
    queue: str  # the work queue (or the parking lot)
    waiting_in: str  # the queue its messages wait in
    messages: int | None  # None: the broker did not say
    ui_url: str
    redrivable: bool


@dataclass(frozen=True)
class PipelineHealth:
    ledger: LastAudit  # the last audit, not one run on the page (contracts/ledger_audit.py)
    # stuck payouts, outbox lag, parked outbox rows, events no webhook service took up,
    # webhooks PENDING with no attempt
    pipeline_problems: list[str]
    parked_deliveries: int
    queues: list[QueueCount]
    broker_error: str | None

    @property
    def healthy(self) -> bool:
        dead = any(queue.messages for queue in self.queues)
        return self.ledger.current and not (
            self.ledger.problem_count
            or self.pipeline_problems
            or self.parked_deliveries
            or dead
            or self.broker_error
        )


def work_queue_names(settings: Settings) -> list[str]:
    return [queue.name for queue in all_work_queues(len(settings.webhook_retry_ladder))]


def management_ui_url(settings: Settings, queue: str) -> str:
    """The queue's page in the RabbitMQ management UI (credentials never part of a link)."""
    ui = urlsplit(settings.dashboard_rabbitmq_ui_url)
    host = ui.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    netloc = f"{host}:{ui.port}" if ui.port else host
    base = urlunsplit((ui.scheme or "http", netloc, ui.path.rstrip("/"), "", ""))
    vhost = unquote(urlsplit(settings.amqp_url).path.lstrip("/")) or "/"
    return f"{base}/#/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}"


async def _database_checks(
    sessions: SessionFactory, settings: Settings, time: MerchantTime
) -> tuple[LastAudit, list[str], int]:
    """The last ledger audit, `payouts reconcile`'s pipeline checks and the parked deliveries."""
    ledger = await last_audit(sessions)
    async with sessions() as session:
        await begin_snapshot(session)
        pipeline = await pipeline_problems(session, Thresholds.of(settings), time)
        return ledger, pipeline, await count_parked_deliveries(session)


async def _message_counts(amqp_url: str, queues: list[str]) -> dict[str, int]:
    """How many messages wait in each queue (passive declares: nothing is created)."""
    counts: dict[str, int] = {}
    connection = await connect(amqp_url)
    async with connection:
        for name in queues:
            channel = await connection.channel()  # a missing queue closes its channel
            try:
                queue = await channel.declare_queue(name, passive=True)
                counts[name] = queue.declaration_result.message_count or 0
            except AMQPError:
                continue
            finally:
                if not channel.is_closed:
                    await channel.close()
    return counts


async def pipeline_health(sessions: SessionFactory, settings: Settings) -> PipelineHealth:
    time = MerchantTime.of(settings)
    ledger, pipeline, parked_deliveries = await _database_checks(sessions, settings, time)
    work_queues = work_queue_names(settings)
    watched = [f"{name}.dead" for name in work_queues] + [WEBHOOK_PARKING_LOT]
    broker_error = None
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS * 2):  # the connect, then the counts
            counts = await _message_counts(settings.amqp_url, watched)
    except (AMQPError, OSError, TimeoutError) as exc:
        counts, broker_error = {}, f"RabbitMQ did not answer: {type(exc).__name__}"

    def count(queue: str, waiting_in: str, *, redrivable: bool) -> QueueCount:
        ui_url = management_ui_url(settings, waiting_in)
        return QueueCount(queue, waiting_in, counts.get(waiting_in), ui_url, redrivable)

    queues = [count(name, f"{name}.dead", redrivable=True) for name in work_queues]
    queues.append(count(WEBHOOK_PARKING_LOT, WEBHOOK_PARKING_LOT, redrivable=False))
    return PipelineHealth(ledger, pipeline, parked_deliveries, queues, broker_error)


class DeadLetterUnreadable(ApiError):
    status_code: ClassVar[int] = 409
    code: ClassVar[str] = "DEAD_LETTER_UNREADABLE"


class RedriveRefused(ApiError):
    status_code: ClassVar[int] = 409
    code: ClassVar[str] = "REDRIVE_REFUSED"


async def redrive_dead_letters(settings: Settings, work_queue: str) -> int:
    """`payouts dlq redrive QUEUE`: the dead letters back to their work queue (confirmed). A
    broker that does not answer, or has no such queue yet, is a dependency down (503). One that
    answers and refuses a message (a full work queue), or a message we cannot decode at the
    queue's head, stops the redrive: a 409 that says how many were moved before."""
    try:
        redriven = await redrive(settings.amqp_url, work_queue, REDRIVE_LIMIT)
    except OSError as exc:
        # The driver's words to the log only: the page showed an internal address, or nothing
        # at all for a broker that hangs ("RabbitMQ: ": dashboard outages review).
        log.warning("redrive of %s: RabbitMQ did not answer: %r", work_queue, exc)
        raise ServiceUnavailable(BROKER_UNAVAILABLE) from exc
    except AMQPError as exc:  # the broker's own words (no such queue yet), when it said any
        raise ServiceUnavailable(f"RabbitMQ: {exc}" if str(exc) else BROKER_UNAVAILABLE) from exc
    stopped = redriven.stopped_by
    moved = f"{redriven.moved} message(s) moved back to {work_queue}, then"
    if isinstance(stopped, UnreadableDeadLetter):
        raise DeadLetterUnreadable(f"{moved} {stopped}") from stopped
    if stopped is not None:
        raise RedriveRefused(
            f"{moved} RabbitMQ refused one, which stays where it was (is {work_queue} full?): "
            f"{stopped}"
        ) from stopped
    return redriven.moved
