"""What a delivery's properties and headers hold that the AMQP library cannot read, read
leniently rather than refused: a short string that is not UTF-8 with U+FFFD in place of what
does not read, a timestamp no `datetime` holds (past the year 9999) as None.

A short string (a message's `message_id`, `correlation_id`, `type`...) is UTF-8 by the AMQP
spec, and a timestamp is seconds, but RabbitMQ passes on what a publisher sent, and pamqp raised
on a delivery whose bytes did not decode: aiormq took that for a broken frame and closed the
whole connection, every consumer on it, and at each reconnection the same message came again,
until RabbitMQ's delivery limit dead-lettered it: a payout queued behind one settled after 55 s
instead of at once (consumer and dead-letter reviews). Read so, the message reaches our decoder,
which dead-letters what is not one of our messages, with its reason. For the consumers
(contracts.broker): the operator's tools take such a message as one they cannot read, and say
what to do with it."""

import datetime
import struct

import pamqp.common
import pamqp.decode

_STRICT_TIMESTAMP = pamqp.decode.timestamp
_TIMESTAMP_BYTES = 8


def _short_str(value: bytes) -> tuple[int, str]:
    """pamqp.decode.short_str, but for the decoding: lenient."""
    try:
        length = pamqp.common.Struct.byte.unpack(value[0:1])[0]
    except (struct.error, TypeError) as err:
        raise ValueError("Could not unpack short string value") from err
    return length + 1, value[1 : length + 1].decode("utf-8", errors="replace")


def _timestamp(value: bytes) -> tuple[int, datetime.datetime | None]:
    """pamqp.decode.timestamp, but a time no datetime holds is None (a frame too short to hold
    one is still refused)."""
    if len(value) < _TIMESTAMP_BYTES:
        raise ValueError("Could not unpack timestamp value")
    try:
        return _STRICT_TIMESTAMP(value)
    except (ValueError, OverflowError, OSError):  # out of datetime's range
        return _TIMESTAMP_BYTES, None


def read_deliveries_leniently() -> None:
    """Once per process, before its first connection (idempotent): the property decoders
    (METHODS) and the header tables' (TABLE_MAPPING)."""
    pamqp.decode.METHODS["shortstr"] = _short_str
    pamqp.decode.METHODS["timestamp"] = _timestamp
    pamqp.decode.TABLE_MAPPING[b"T"] = _timestamp
