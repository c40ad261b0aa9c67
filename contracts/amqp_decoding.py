"""Short strings of a delivery that are not UTF-8 decoded with U+FFFD in place of what does not
read, rather than refused.

A short string (a message's `message_id`, `correlation_id`, `type`...) is UTF-8 by the AMQP
spec, but RabbitMQ passes on what a publisher sent, and pamqp raised on a delivery whose bytes
did not decode: aiormq took that for a broken frame and closed the whole connection, every
consumer on it, and at each reconnection the same message came again, until RabbitMQ's delivery
limit dead-lettered it: a payout queued behind one settled after 55 s instead of at once
(consumer review). Read so, the message reaches our decoder, which dead-letters what is not one
of our messages, with its reason. For the consumers (contracts.broker): the operator's tools take
such a message as one they cannot read, and say what to do with it."""

import struct

import pamqp.common
import pamqp.decode


def _short_str(value: bytes) -> tuple[int, str]:
    """pamqp.decode.short_str, but for the decoding: lenient."""
    try:
        length = pamqp.common.Struct.byte.unpack(value[0:1])[0]
    except (struct.error, TypeError) as err:
        raise ValueError("Could not unpack short string value") from err
    return length + 1, value[1 : length + 1].decode("utf-8", errors="replace")


def read_short_strings_leniently() -> None:
    """Once per process, before its first connection (idempotent)."""
    pamqp.decode.METHODS["shortstr"] = _short_str
