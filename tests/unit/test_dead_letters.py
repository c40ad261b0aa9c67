"""What `payouts dlq list` says of a dead letter (contracts.dead_letters.DeadLetter)."""

from types import SimpleNamespace
from typing import Any, cast

from aio_pika.abc import AbstractIncomingMessage

from contracts.dead_letters import DeadLetter
from contracts.redelivery import retry_count
from contracts.topology import LAST_ERROR_HEADER, RETRY_COUNT_HEADER

RETRIED = {RETRY_COUNT_HEADER: 1, LAST_ERROR_HEADER: "OperationalError: db restarting"}


def letter(headers: dict[str, Any]) -> DeadLetter:
    message = SimpleNamespace(message_id="m1", correlation_id=None, headers=headers)
    return DeadLetter.of(cast(AbstractIncomingMessage, message))


def test_a_dead_letter_by_the_delivery_limit_says_so_with_the_earlier_error_as_history() -> None:
    """After a retry (expired out of its retry queue: x-first-death-reason) a consumer kept
    crashing on the command until RabbitMQ dead-lettered it: it was listed with the retry's
    database error, and `expired`."""
    dead = letter(
        {
            **RETRIED,
            "x-death": [
                {"reason": "delivery_limit", "queue": "processor.payout-commands"},
                {"reason": "expired", "queue": "processor.payout-commands.retry"},
            ],
            "x-first-death-reason": "expired",
        }
    )
    assert dead.broker_reason == "delivery_limit"
    assert dead.reason == (
        "delivery_limit (RabbitMQ); the last error before: OperationalError: db restarting"
    )


def test_a_dead_letter_our_consumer_refused_says_why() -> None:
    dead = letter({**RETRIED, "x-death": [{"reason": "rejected"}, {"reason": "expired"}]})
    assert dead.reason == "OperationalError: db restarting"
    assert letter({"x-death": [{"reason": "rejected"}]}).reason == "rejected"
    assert letter({}).reason is None


def test_a_header_published_by_hand_in_bytes_that_are_not_utf_8_is_shown_escaped() -> None:
    """`payouts dlq list` and the operations page died on a UnicodeDecodeError."""
    dead = letter({"x-payout-id": b"p-\xff", LAST_ERROR_HEADER: b"bad \xfe body"})
    assert (dead.payout_id, dead.reason) == ("p-\\xff", "bad \\xfe body")


def test_a_retry_count_that_is_no_whole_number_counts_as_none() -> None:
    """A float infinity (another client's) raised OverflowError out of int()."""
    for odd in (float("inf"), float("nan"), "x", None, -3):
        assert retry_count({RETRY_COUNT_HEADER: odd}) == 0
    assert retry_count({RETRY_COUNT_HEADER: 2}) == 2
