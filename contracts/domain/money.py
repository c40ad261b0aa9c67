"""PKR amounts: parsed from requests, formatted for responses. Never a float."""

import re
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal, InvalidOperation

from contracts.domain.text import trimmed

MAX_PAYOUT_AMOUNT = Decimal("10000000.00")
# The largest DECIMAL(18,2): a merchant's balance (available plus held) never exceeds it.
MAX_BALANCE = Decimal("9999999999999999.99")
CENT = Decimal("0.01")

# The string form the OpenAPI schema publishes; Decimal() alone would also take "1e3", "1_000",
# "+5" and non-ASCII digits. A minus is read, to be refused for the sign ("-5" was told it is
# not a numeric string).
_NUMERIC_STRING = re.compile(r"-?\d+(\.\d{1,2})?", re.ASCII)
_MORE_DECIMALS = re.compile(r"-?\d+\.\d{3,}", re.ASCII)  # "10.500": refused, for its decimals


class InvalidAmount(ValueError):
    """An amount that is not a positive PKR value with at most 2 decimals."""


def parse_amount(raw: object, *, maximum: Decimal = MAX_PAYOUT_AMOUNT) -> Decimal:
    """Accept a JSON number or numeric string with at most 2 decimals, 0 < amount <= maximum."""
    if isinstance(raw, bool) or not isinstance(raw, int | float | str | Decimal):
        raise InvalidAmount("must be a number or a numeric string")
    text = trimmed(raw) if isinstance(raw, str) else str(raw)
    if isinstance(raw, str) and _MORE_DECIMALS.fullmatch(text):
        raise InvalidAmount("must have at most 2 decimal places")
    if isinstance(raw, str) and not _NUMERIC_STRING.fullmatch(text):
        raise InvalidAmount('must be a number or a numeric string such as "1500.00"')
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise InvalidAmount("must be a number or a numeric string") from exc
    if not value.is_finite():
        raise InvalidAmount("must be a finite number")
    if value <= 0:
        raise InvalidAmount("must be greater than 0")
    if value > maximum:
        raise InvalidAmount(f"must be at most {format_amount(maximum)}")
    if value != value.quantize(CENT, rounding=ROUND_DOWN):
        raise InvalidAmount("must have at most 2 decimal places")
    return value.quantize(CENT, rounding=ROUND_HALF_EVEN)


def format_amount(value: Decimal) -> str:
    """Exactly two decimals: Decimal('1500') -> '1500.00'."""
    return f"{value.quantize(CENT, rounding=ROUND_HALF_EVEN):f}"
