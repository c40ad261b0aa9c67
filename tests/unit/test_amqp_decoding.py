"""A timestamp no datetime holds, as a property or in a header table, reads as None once a
consumer's process reads deliveries leniently (contracts.amqp_decoding); one too short to be a
timestamp is still a broken frame."""

import datetime

import pamqp.common
import pamqp.decode
import pytest

from contracts.amqp_decoding import read_deliveries_leniently

PAST_9999 = pamqp.common.Struct.timestamp.pack(2**63)


def test_a_timestamp_past_9999_reads_as_none_in_properties_and_headers() -> None:
    read_deliveries_leniently()

    assert pamqp.decode.by_type(PAST_9999, "timestamp") == (8, None)
    assert pamqp.decode.embedded_value(b"T" + PAST_9999) == (9, None)
    in_range = pamqp.common.Struct.timestamp.pack(1_764_000_000)
    assert pamqp.decode.by_type(in_range, "timestamp") == (
        8,
        datetime.datetime.fromtimestamp(1_764_000_000, tz=datetime.UTC),
    )
    with pytest.raises(ValueError, match="Could not unpack"):
        pamqp.decode.by_type(PAST_9999[:4], "timestamp")
