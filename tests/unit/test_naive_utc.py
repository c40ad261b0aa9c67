"""Times as the database stores them (naive UTC), and the times no UTC column can hold: before
year 1 in UTC, which a client can still write (0001-01-01T00:00:00+00:01)."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from api_service.dashboard.pages.webhooks import _since
from api_service.errors import ValidationFailed
from contracts.db.engine import naive_utc
from contracts.webhooks import retry_due
from contracts.wire import format_timestamp

BEFORE_YEAR_ONE = "0001-01-01T00:00:00+00:01"


def test_a_time_is_stored_as_naive_utc() -> None:
    pakistan = timezone(timedelta(hours=5))
    assert naive_utc(datetime(2026, 12, 1, 15, 0, tzinfo=pakistan)) == datetime(2026, 12, 1, 10)
    assert naive_utc(datetime(2026, 12, 1, 10, 0, tzinfo=UTC)) == datetime(2026, 12, 1, 10)
    assert naive_utc(datetime(2026, 12, 1, 10)) == datetime(2026, 12, 1, 10)  # read as UTC


def test_a_time_before_year_one_in_utc_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="out of range"):
        naive_utc(datetime.fromisoformat(BEFORE_YEAR_ONE))


def test_the_dashboards_recover_form_names_its_since_field() -> None:
    with pytest.raises(ValidationFailed) as refused:
        _since(BEFORE_YEAR_ONE)
    assert refused.value.details == [
        {"field": "since", "message": "must be a time such as 2026-01-31T10:00"}
    ]


def test_a_retry_header_with_no_utc_time_is_unreadable() -> None:
    assert retry_due(BEFORE_YEAR_ONE) is None
    assert retry_due("2026-12-01T15:00:00+05:00") == datetime(2026, 12, 1, 10)


def test_the_wire_shows_utc_with_milliseconds_and_a_z() -> None:
    naive = datetime(2026, 12, 2, 6, 0, 0, 123_456)
    karachi = timezone(timedelta(hours=5))
    assert format_timestamp(naive) == "2026-12-02T06:00:00.123Z"
    assert format_timestamp(naive.replace(microsecond=0)) == "2026-12-02T06:00:00.000Z"
    assert format_timestamp(naive.replace(tzinfo=UTC)) == "2026-12-02T06:00:00.123Z"
    assert format_timestamp(naive.replace(hour=11, tzinfo=karachi)) == "2026-12-02T06:00:00.123Z"
