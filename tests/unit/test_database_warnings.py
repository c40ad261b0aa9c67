"""The server's warnings asyncmy logs: those by design (an INSERT IGNORE meeting the key it is
meant to meet, alembic's primary key name) are not; any other is (contracts/db/engine.py)."""

import logging

import pytest

from contracts.db.engine import _unexpected


def _warning(message: str) -> logging.LogRecord:
    return logging.LogRecord("asyncmy", logging.WARNING, __file__, 0, message, None, None)


@pytest.mark.parametrize(
    "message",
    [
        "Duplicate entry 'a1-6f9619ff' for key 'PRIMARY'",
        "Duplicate entry 'a1-6f9619ff' for key 'idempotency_keys.PRIMARY'",  # MySQL 8
        "Duplicate entry 'evt_1' for key 'uq_webhook_delivery_event'",
        "Name 'alembic_version_pkc' ignored for PRIMARY key.",
    ],
)
def test_a_warning_by_design_is_not_logged(message: str) -> None:
    assert not _unexpected(_warning(message))


@pytest.mark.parametrize(
    "message",
    [
        "Duplicate entry 'x' for key 'uq_payouts_merchant_reference'",
        "Incorrect datetime value: '0000-00-00' for column 'due_at' at row 1",
        "Data truncated for column 'amount' at row 1",
    ],
)
def test_any_other_warning_is(message: str) -> None:
    assert _unexpected(_warning(message))
