"""JSON on the wire: camelCase models, money as 2-decimal strings, times as ISO-8601 UTC with Z."""

import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, PlainSerializer, StringConstraints, WithJsonSchema
from pydantic.alias_generators import to_camel

from contracts.domain.money import format_amount


def format_timestamp(value: datetime) -> str:
    """Stored times are naive UTC; the wire shows millisecond precision and a Z. (Every event,
    webhook and answer formats several: the naive case is one call, a third of the time of
    making it aware and replacing its offset.)"""
    utc = value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="milliseconds") + "Z"


def whole_number(text: str | bytes | None, *, max_digits: int = 18) -> int | None:
    """The whole number `text` spells in at most `max_digits` ASCII digits, else None. (A query
    parameter or a header is no place for `str.isdigit()`: it accepts '²', which int() refuses,
    and int() refuses more than 4,300 digits.)"""
    if not text or len(text) > max_digits or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def count_or_more(text: str | bytes) -> float | None:
    """The whole number `text` spells in ASCII digits, leading zeros allowed; infinity when it
    has more significant digits than a number holds (a header's length or wait past any limit);
    None when it is no whole number. (Read as unparsable, a 19-digit Content-Length was "none
    declared", and a 19-digit Retry-After "no wait asked".)"""
    digits = text.decode("latin-1") if isinstance(text, bytes) else text
    if not digits.isascii() or not digits.isdigit():
        return None
    significant = digits.lstrip("0")
    number = whole_number(significant) if significant else 0
    return math.inf if number is None else number


RowId = Annotated[str, StringConstraints(min_length=36, max_length=36)]  # a UUID's text
# Money on the wire: a string with exactly two decimals, documented as such (a plain string
# said nothing of its form).
_MONEY = WithJsonSchema({"type": "string", "pattern": r"^-?\d+\.\d{2}$", "examples": ["1500.00"]})
MoneyString = Annotated[Decimal, PlainSerializer(format_amount, return_type=str), _MONEY]
# The same, where a view is given the text already formatted.
MoneyText = Annotated[str, _MONEY]
# A time on the wire (format_timestamp's ISO-8601, UTC, with a Z) is documented as a date-time:
# a plain string, a client generated from the OpenAPI document took it for text.
_DATE_TIME = WithJsonSchema({"type": "string", "format": "date-time"})
Timestamp = Annotated[datetime, PlainSerializer(format_timestamp, return_type=str), _DATE_TIME]
# The same, where a view is given the text already formatted.
TimestampText = Annotated[str, _DATE_TIME]


class WireModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", by_alias=True))


def dumps(data: Any) -> bytes:
    return orjson.dumps(data)
