"""contracts.domain.money by example: the contract's accepted and refused amounts."""

from decimal import Decimal

import pytest

from contracts.domain.money import MAX_PAYOUT_AMOUNT, InvalidAmount, format_amount, parse_amount

ACCEPTED = [
    ("1500.00", "1500.00"),
    ("1500", "1500.00"),
    (" 1500.5 ", "1500.50"),
    ("0.01", "0.01"),
    ("10000000.00", "10000000.00"),
    (1500, "1500.00"),
    (Decimal("1500.5"), "1500.50"),
    (Decimal("1.5E+3"), "1500.00"),
    (Decimal("12.500"), "12.50"),
    (0.1, "0.10"),
]


@pytest.mark.parametrize(("raw", "parsed"), ACCEPTED)
def test_accepted_amounts(raw: object, parsed: str) -> None:
    value = parse_amount(raw)
    assert (type(value), str(value)) == (Decimal, parsed)


REFUSED = [
    (0, "greater than 0"),
    ("0.00", "greater than 0"),
    (Decimal("-1"), "greater than 0"),
    ("-5", "greater than 0"),
    ("-0.50", "greater than 0"),
    ("-0.001", "at most 2 decimal places"),
    ("--5", "numeric string"),
    ("10000000.01", "at most 10000000.00"),
    (Decimal("1.005"), "2 decimal places"),
    ("1.005", "at most 2 decimal places"),
    ("10.500", "at most 2 decimal places"),  # the text's decimals, where 10.500 as a number is 10.5
    (True, "number"),
    (None, "number"),
    ("", "numeric string"),
    ("1e3", "numeric string"),
    ("NaN", "numeric string"),
    (Decimal("NaN"), "finite"),
    (float("inf"), "finite"),
]


@pytest.mark.parametrize(("raw", "reason"), REFUSED)
def test_refused_amounts_say_why(raw: object, reason: str) -> None:
    with pytest.raises(InvalidAmount, match=reason):
        parse_amount(raw)


def test_maximum_can_be_raised_for_operator_top_ups() -> None:
    assert parse_amount("50000000", maximum=Decimal("1e12")) == Decimal("50000000.00")
    with pytest.raises(InvalidAmount):
        parse_amount("50000000")
    assert Decimal("10000000.00") == MAX_PAYOUT_AMOUNT


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("1500"), "1500.00"),
        (Decimal("0.5"), "0.50"),
        (Decimal("-250.25"), "-250.25"),
        (Decimal("1E+3"), "1000.00"),
        (Decimal("999999999999999.99"), "999999999999999.99"),
    ],
)
def test_format_amount_always_has_two_decimals(value: Decimal, text: str) -> None:
    assert format_amount(value) == text
