"""The operator's tools (`payouts` CLI, the dashboard's operations page) on odd input: a message
another client published with a header that is not UTF-8, numbers out of range, a corrupt
ledger. Each gave a traceback, a 500, a queue stuck at one message, or a clean reconcile."""

import json
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest.mock import patch

import aio_pika
import pamqp.decode
import pamqp.encode
import pytest

from api_service.dashboard.pipeline import (
    BROKER_UNAVAILABLE,
    DeadLetterUnreadable,
    redrive_dead_letters,
)
from api_service.errors import ServiceUnavailable
from cli.supervisor import payouts_command
from contracts.settings import Settings
from contracts.topology import (
    DEFAULT_EXCHANGE,
    PAYOUT_COMMANDS,
    WEBHOOK_PARKING_LOT,
    declare_topology_at,
)
from tests.conftest import in_process_api
from tests.support.amqp import RabbitClient, eventually
from tests.support.cli import run_payouts as payouts
from tests.support.dashboard_client import operator_signed_in
from tests.support.webhook_flow import SINGLE_RESENDS

_encode_table_value = pamqp.encode.encode_table_value


@contextmanager
def raw_long_string_headers() -> Iterator[None]:
    """Publish `bytes` header values as AMQP long strings ('S'), as other clients (and the
    management UI's byte-for-byte copies) do: pamqp decodes a long string that is not UTF-8 back
    into `bytes`, which is what our tools then receive."""

    def encode(value: object) -> bytes:
        if isinstance(value, bytes):
            return b"S" + struct.pack(">I", len(value)) + value
        return _encode_table_value(value)  # type: ignore[arg-type]

    pamqp.encode.encode_table_value = encode  # type: ignore[assignment]
    try:
        yield
    finally:
        pamqp.encode.encode_table_value = _encode_table_value


NOT_UTF8_HEADER = {"x-payout-id": b"\xff\xfe"}
# A text not in UTF-8 at the top of the headers, in an array, in a table.
NOT_UTF8_HEADERS = {
    "at the top": NOT_UTF8_HEADER,
    "in an array": {"x-trace": [b"\xff\xfe"]},
    "in a table": {"x-meta": {"note": b"\xff\xfe"}},
}


async def _publish_not_utf8_header(
    amqp_url: str, routing_key: str, body: bytes, headers: dict[str, Any] = NOT_UTF8_HEADER
) -> str:
    message_id = f"bad-header-{uuid.uuid4()}"
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        with raw_long_string_headers():
            await channel.default_exchange.publish(
                aio_pika.Message(body, message_id=message_id, headers=headers),
                routing_key=routing_key,
            )
    return message_id


async def _a_bad_dead_letter_then_a_good_one(
    settings: Settings, rabbit: RabbitClient, headers: dict[str, Any] = NOT_UTF8_HEADER
) -> str:
    """The payout commands' dead-letter queue holds a message with a header not in UTF-8, then a
    good one: the good one's id."""
    await declare_topology_at(settings.amqp_url, webhook_retry_tiers=3)
    await rabbit.purge(PAYOUT_COMMANDS.dead_letter_queue, PAYOUT_COMMANDS.name)
    await _publish_not_utf8_header(
        settings.amqp_url, PAYOUT_COMMANDS.dead_letter_queue, b"{}", headers
    )
    good = f"good-{uuid.uuid4()}"
    await rabbit.publish(
        b"{}",
        exchange=DEFAULT_EXCHANGE,
        routing_key=PAYOUT_COMMANDS.dead_letter_queue,
        message_id=good,
    )
    return good


async def _ids_in(rabbit: RabbitClient, queue: str) -> set[str | None]:
    taken = await rabbit.take(queue)
    return {message.message_id for message in taken}


@pytest.mark.parametrize("headers", NOT_UTF8_HEADERS.values(), ids=NOT_UTF8_HEADERS.keys())
async def test_a_dead_letter_with_a_header_not_utf8_does_not_block_the_cli_redrive(
    settings: Settings, service_env: dict[str, str], rabbit: RabbitClient, headers: dict[str, Any]
) -> None:
    """A dead letter whose header is not UTF-8 (published by another client) made `payouts dlq
    redrive` die on a TypeError traceback, every time, and the good dead letters behind it were
    never moved back (then still when the text was in an array or a table)."""
    good = await _a_bad_dead_letter_then_a_good_one(settings, rabbit, headers)

    done = payouts(service_env, "dlq", "redrive", PAYOUT_COMMANDS.name)
    done_again = payouts(service_env, "dlq", "redrive", PAYOUT_COMMANDS.name)

    try:
        moved = await _ids_in(rabbit, PAYOUT_COMMANDS.name)
        assert good in moved, (
            f"the good dead letter is stuck behind the bad one: {done.stderr[-200:]}"
        )
        assert "Traceback" not in done.stderr + done_again.stderr, done.stderr[-400:]
    finally:
        await rabbit.purge(PAYOUT_COMMANDS.dead_letter_queue, PAYOUT_COMMANDS.name)


async def test_a_parked_webhook_with_a_header_not_utf8_does_not_block_replay_parked(
    settings: Settings, service_env: dict[str, str], rabbit: RabbitClient
) -> None:
    """`payouts webhooks replay-parked`: the same TypeError traceback on such a message, and the
    parked webhooks behind it are never replayed."""
    await declare_topology_at(settings.amqp_url, webhook_retry_tiers=3)
    await rabbit.purge(WEBHOOK_PARKING_LOT, SINGLE_RESENDS)
    merchant = str(uuid.uuid4())
    bad_event = {"id": f"evt_{uuid.uuid4().hex[:24]}", "merchantId": merchant}
    await _publish_not_utf8_header(
        settings.amqp_url, WEBHOOK_PARKING_LOT, json.dumps(bad_event).encode()
    )
    good = f"good-{uuid.uuid4()}"
    event = {"id": f"evt_{uuid.uuid4().hex[:24]}", "merchantId": merchant}
    await rabbit.publish(
        json.dumps(event).encode(),
        exchange=DEFAULT_EXCHANGE,
        routing_key=WEBHOOK_PARKING_LOT,
        message_id=good,
    )

    done = payouts(service_env, "webhooks", "replay-parked")

    try:
        moved = await _ids_in(rabbit, SINGLE_RESENDS)
        assert good in moved, (
            f"the good parked webhook is stuck behind the bad one: {done.stderr[-200:]}"
        )
        assert "Traceback" not in done.stderr, done.stderr[-400:]
    finally:
        await rabbit.purge(WEBHOOK_PARKING_LOT, SINGLE_RESENDS)


def test_outbox_list_parked_with_a_limit_past_bigint_is_a_message_not_a_traceback(
    service_env: dict[str, str],
) -> None:
    """`--limit 99999999999999999999` reached MySQL as a LIMIT it cannot parse: a 1064
    ProgrammingError traceback (the other commands' --limit take it)."""
    done = payouts(service_env, "outbox", "list-parked", "--limit", "99999999999999999999")

    assert "Traceback" not in done.stderr, done.stderr[-300:]
    assert done.returncode in (0, 2), done.stderr[-300:]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_webhook_sink_refuses_a_port_past_65535(service_env: dict[str, str]) -> None:
    """`payouts webhook-sink --port 65536+N` said "listening on http://127.0.0.1:65536+N/" and
    silently listened on port N (the port wrapped modulo 65536): the operator's webhooks went
    nowhere, or to another sink. A port out of range is bad input: refused, exit 2."""
    port = _free_port()
    sink = subprocess.Popen(
        payouts_command("webhook-sink", "--port", str(port + 65536)),
        env=service_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        listening = False
        while time.monotonic() < deadline and sink.poll() is None:
            with socket.socket() as client:
                client.settimeout(0.2)
                if client.connect_ex(("127.0.0.1", port)) == 0:
                    listening = True
                    break
            time.sleep(0.05)  # polling a port with a deadline, not waiting for work
        assert not listening, f"the sink took --port {port + 65536} and listens on {port}"
        assert sink.poll() not in (None, 0), "the sink accepted a port past 65535"
    finally:
        if sink.poll() is None:
            sink.terminate()
            sink.wait(10)


OPERATOR_TOKEN = "operator-token-of-the-ops-review"


async def test_a_redrive_with_rabbitmq_down_says_so_without_its_address(
    settings: Settings,
) -> None:
    """The page showed the driver's words: an internal address ("Connect call failed
    ('127.0.0.1', 52457)"), or nothing for a broker that hangs (dashboard outages review)."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nobody listens there once the block ends
    down = settings.model_copy(update={"amqp_url": f"amqp://guest:guest@127.0.0.1:{port}/"})

    with pytest.raises(ServiceUnavailable) as refused:
        await redrive_dead_letters(down, PAYOUT_COMMANDS.name)

    assert refused.value.message == BROKER_UNAVAILABLE


async def test_the_operations_page_redrive_button_with_a_header_not_utf8_is_not_a_500(
    settings: Settings, rabbit: RabbitClient
) -> None:
    """The button on /dashboard/operations, end to end: a 500, and the dead letters stay."""
    good = await _a_bad_dead_letter_then_a_good_one(settings, rabbit)
    with_operations = settings.model_copy(update={"operator_token": OPERATOR_TOKEN})
    try:
        async with in_process_api(with_operations) as client:
            csrf = await operator_signed_in(client, OPERATOR_TOKEN)

            answer = await client.post(
                f"/dashboard/operations/queues/{PAYOUT_COMMANDS.name}/redrive",
                data={"csrf_token": csrf},
            )
        moved = await _ids_in(rabbit, PAYOUT_COMMANDS.name)
        assert answer.status_code < 500, answer.status_code
        assert good in moved, "the good dead letter is stuck behind the bad one"
    finally:
        await rabbit.purge(PAYOUT_COMMANDS.dead_letter_queue, PAYOUT_COMMANDS.name)


async def _a_message_id_not_utf8_at_the_head_of(
    queue: str, settings: Settings, rabbit: RabbitClient
) -> None:
    """A short-string property the AMQP library cannot decode, at the head of `queue` (RabbitMQ
    passes such a message on as it was published)."""
    await declare_topology_at(settings.amqp_url, webhook_retry_tiers=3)
    await rabbit.purge(queue)
    await publish_a_message_id_not_utf8(queue, settings)


async def publish_a_message_id_not_utf8(queue: str, settings: Settings) -> None:
    """A message the AMQP library cannot decode, at the end of `queue`."""
    original = pamqp.encode.METHODS["shortstr"]

    def raw_short_string(value: object) -> bytes:
        if isinstance(value, bytes):
            return struct.pack("B", len(value)) + value
        return original(value)  # type: ignore[no-any-return]

    message = aio_pika.Message(b"{}", message_id="placeholder")
    message.message_id = b"\xff\xfe-id"  # type: ignore[assignment]
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        pamqp.encode.METHODS["shortstr"] = raw_short_string
        try:
            await channel.default_exchange.publish(message, routing_key=queue)
        finally:
            pamqp.encode.METHODS["shortstr"] = original


# The commands that take messages off a queue one by one, and that queue.
TAKING_COMMANDS = {
    "dlq list": (("dlq", "list", PAYOUT_COMMANDS.name), PAYOUT_COMMANDS.dead_letter_queue),
    "dlq redrive": (("dlq", "redrive", PAYOUT_COMMANDS.name), PAYOUT_COMMANDS.dead_letter_queue),
    "webhooks replay-parked": (("webhooks", "replay-parked"), WEBHOOK_PARKING_LOT),
}


@pytest.mark.parametrize(("command", "queue"), TAKING_COMMANDS.values(), ids=TAKING_COMMANDS)
async def test_a_message_the_library_cannot_decode_is_one_line_saying_what_to_do(
    settings: Settings,
    service_env: dict[str, str],
    rabbit: RabbitClient,
    command: tuple[str, ...],
    queue: str,
) -> None:
    """aiormq's traceback, then "RabbitMQ refused: ... (does the vhost exist?)": a wrong lead."""
    await _a_message_id_not_utf8_at_the_head_of(queue, settings, rabbit)
    try:
        done = payouts(service_env, *command)

        assert done.returncode == 1, done.stderr[-300:]
        assert done.stderr.splitlines() == [
            f"RabbitMQ: the next message of {queue} cannot be decoded"
            " (a property that is not UTF-8?) and stays at its head, in front of the others: take"
            " it off in the RabbitMQ management UI (Queues > Get messages, Ack mode: Automatic"
            " ack), then run this again"
        ]
    finally:
        await _take_off_the_undecodable(queue, rabbit)


async def test_the_redrive_button_with_a_dead_letter_it_cannot_decode_is_a_409(
    settings: Settings, rabbit: RabbitClient
) -> None:
    queue = PAYOUT_COMMANDS.dead_letter_queue
    await _a_message_id_not_utf8_at_the_head_of(queue, settings, rabbit)
    # Decoded as the API's process decodes: a consumer started earlier in this process read
    # short strings leniently from then on (contracts.amqp_decoding), and the API starts none.
    strict = {"shortstr": pamqp.decode.short_str}
    try:
        with (
            patch.dict(pamqp.decode.METHODS, strict),
            pytest.raises(DeadLetterUnreadable, match="take it off in the RabbitMQ management"),
        ):
            await redrive_dead_letters(settings, PAYOUT_COMMANDS.name)
    finally:
        await _take_off_the_undecodable(queue, rabbit)


async def _take_off_the_undecodable(queue: str, rabbit: RabbitClient) -> None:
    """The message stays (at the head of the queue: nothing moved it), back in the queue once
    the connection that held it is closed; then purged. (Purged before, it was still held, and
    came back to break the next test's reads of the queue.)"""

    async def back_in_the_queue() -> None:
        assert await rabbit.count(queue) == 1

    await eventually(back_in_the_queue)
    await rabbit.purge(queue)
    assert await rabbit.count(queue) == 0
