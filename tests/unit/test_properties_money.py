"""Properties of PKR amounts (contracts.domain.money): every valid amount survives
parse -> format unchanged in any form a request may carry it, everything else is InvalidAmount,
and nothing is ever a float."""

import math
import re
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from contracts.domain.money import MAX_PAYOUT_AMOUNT, InvalidAmount, format_amount, parse_amount
from tests.support.strategies import MAX_AMOUNT_CENTS, amounts, cents_to_amount

MONEY_TEXT = re.compile(r"^\d+\.\d{2}$", re.ASCII)
# The string form the API publishes in its OpenAPI schema (api_service/schemas.py AmountIn);
# JSON Schema's `\d` is ASCII only, hence re.ASCII.
PUBLISHED_STRING_AMOUNT = re.compile(r"^\d+(\.\d{1,2})?$", re.ASCII)

valid_cents = st.integers(1, MAX_AMOUNT_CENTS)


def canonical(cents: int) -> str:
    """The response form of an amount, computed without the code under test."""
    return f"{cents // 100}.{cents % 100:02d}"


def assert_invalid(raw: object) -> None:
    with pytest.raises(InvalidAmount):
        parse_amount(raw)


@given(valid_cents)
def test_decimal_round_trip(cents: int) -> None:
    assert format_amount(parse_amount(cents_to_amount(cents))) == canonical(cents)


@given(valid_cents)
def test_string_round_trip(cents: int) -> None:
    assert format_amount(parse_amount(canonical(cents))) == canonical(cents)


@given(valid_cents)
def test_short_decimal_strings_are_padded(cents: int) -> None:
    """'1500' and '1500.5' are the same amounts as '1500.00' and '1500.50'."""
    text = canonical(cents).rstrip("0").rstrip(".")
    assert format_amount(parse_amount(text)) == canonical(cents)


@given(st.integers(1, int(MAX_PAYOUT_AMOUNT)))
def test_integer_round_trip(rupees: int) -> None:
    assert format_amount(parse_amount(rupees)) == f"{rupees}.00"


@given(valid_cents)
def test_json_number_round_trip(cents: int) -> None:
    """A JSON number arrives as a float; every 2-decimal amount up to 10M survives it exactly."""
    assert parse_amount(float(canonical(cents))) == cents_to_amount(cents)


@given(
    st.one_of(
        valid_cents.map(cents_to_amount),
        valid_cents.map(canonical),
        valid_cents.map(lambda cents: float(canonical(cents))),
        st.integers(1, int(MAX_PAYOUT_AMOUNT)),
    )
)
def test_parsed_amount_is_an_exact_two_decimal_decimal(raw: object) -> None:
    value = parse_amount(raw)
    assert type(value) is Decimal
    assert value.as_tuple().exponent == -2
    assert 0 < value <= MAX_PAYOUT_AMOUNT


@given(amounts(min_cents=0, max_cents=10**18 - 1))
def test_format_is_always_two_decimals(value: Decimal) -> None:
    """Any non-negative DECIMAL(18,2), e.g. a balance far above the payout maximum."""
    assert MONEY_TEXT.fullmatch(format_amount(value))


@given(
    st.integers(1, 10**20),
    st.integers(3, 12),
    st.integers(1, 9),
)
def test_more_than_two_decimals_is_rejected(whole: int, places: int, last_digit: int) -> None:
    """A non-zero digit in the third or a later decimal place, as a Decimal and as a string."""
    value = Decimal(whole % MAX_AMOUNT_CENTS).scaleb(-2) + Decimal(last_digit).scaleb(-places)
    assert_invalid(value)
    assert_invalid(f"{value:f}")


@given(st.integers(-(10**12), 0))
def test_zero_and_negative_are_rejected(cents: int) -> None:
    value = cents_to_amount(cents)
    assert_invalid(value)
    assert_invalid(f"{value:f}")
    assert_invalid(cents // 100)


@given(st.integers(MAX_AMOUNT_CENTS + 1, 10**20))
def test_above_maximum_is_rejected(cents: int) -> None:
    value = cents_to_amount(cents)
    assert_invalid(value)
    assert_invalid(f"{value:f}")
    assert_invalid(float(value))


@given(
    st.sampled_from(["NaN", "nan", "-NaN", "sNaN", "Infinity", "-Infinity", "inf", "-inf", "Inf"])
    | st.sampled_from([math.nan, math.inf, -math.inf, Decimal("NaN"), Decimal("-Infinity")])
)
def test_not_finite_is_rejected(raw: object) -> None:
    assert_invalid(raw)


@given(st.booleans())
def test_booleans_are_not_numbers(raw: bool) -> None:
    assert_invalid(raw)


@given(
    st.none() | st.lists(st.integers()) | st.dictionaries(st.text(), st.integers()) | st.binary()
)
def test_other_json_types_are_rejected(raw: object) -> None:
    assert_invalid(raw)


def near_miss_strings() -> st.SearchStrategy[str]:
    """Valid numerals with one foreign character inserted: the likeliest malformed inputs."""
    return st.builds(
        lambda text, position, char: text[:position] + char + text[position:],
        valid_cents.map(canonical),
        st.integers(0, 12),
        st.sampled_from("_,+-eE ") | st.characters(categories=["Nd", "Zs", "Po"]),
    )


@given(
    st.one_of(
        st.text(),
        st.text(alphabet="0123456789._+-eE, "),
        st.text(alphabet=st.characters(categories=["Nd"]), min_size=1),
        near_miss_strings(),
    ).filter(lambda text: not PUBLISHED_STRING_AMOUNT.fullmatch(text.strip()))
)
# Decimal() itself accepts all of these: PEP 515 underscores, any script's decimal digits
# (Arabic-Indic 100, fullwidth 12), exponents, signs, bare points, trailing zeros.
@example("1_000")
@example("\u0661\u0660\u0660")
@example("\uff11\uff12")
@example("1e2")
@example("+5")
@example(".5")
@example("5.")
@example("0.010")
def test_strings_outside_the_published_pattern_are_rejected(text: str) -> None:
    """A string amount is accepted only in the form the OpenAPI schema promises."""
    assert_invalid(text)
