"""Properties of destination accounts (contracts.domain.accounts): Pakistani IBANs against an
independent mod-97 oracle, single-character errors, wallet mobiles, normalization, masking.

Why every single-character error is caught: after the format check (`PK`, 2 digits, 4 letters,
16 digits) only same-class changes remain, and mod 97 sees each of them as a non-zero multiple
of a power of ten no larger than 99 * 10^k:
- a digit substitution changes the number by d * 10^k with 0 < |d| <= 9;
- a letter substitution (two digits, 10..35) by d * 10^k with 0 < |d| <= 25;
- swapping adjacent digits a, b by 9 * (a - b) * 10^k; adjacent letters by 99 * (a - b) * 10^k;
- a letter/digit swap or substitution breaks the format.
97 is prime and divides none of 10^k, 9, 99 or any |d| < 97, so none of these is 0 mod 97.
The format check must therefore accept ASCII characters only, or a character from another
script with the same digit value slips through both checks.
"""

import re
import string
import sys
import unicodedata

from hypothesis import example, given
from hypothesis import strategies as st

from contracts.domain.accounts import (
    account_number_problem,
    iban_bank_code,
    is_pakistani_iban,
    normalize_account_number,
)
from tests.support.strategies import (
    IBAN_ALPHABET,
    IBAN_BANK_CODES,
    digit_strings,
    iban_mod97,
    pakistani_ibans,
    wallet_mobiles,
)

PLAIN_ACCOUNT = re.compile(r"[0-9]{10,16}")  # the contract: 10-16 digits
IBAN_SHAPE = re.compile(r"PK[0-9]{2}[A-Z]{4}[0-9]{16}")


def is_valid_by_oracle(iban: str) -> bool:
    return iban_mod97(iban[4:] + iban[:4]) == 1


@given(pakistani_ibans())
def test_generated_ibans_are_valid(iban: str) -> None:
    assert is_valid_by_oracle(iban)
    assert is_pakistani_iban(iban)
    assert iban_bank_code(iban) in IBAN_BANK_CODES
    assert account_number_problem("BANK", iban) is None


@given(pakistani_ibans(), st.data())
def test_any_single_substitution_is_rejected(iban: str, data: st.DataObject) -> None:
    position = data.draw(st.integers(0, len(iban) - 1), label="position")
    replacement = data.draw(
        st.sampled_from(IBAN_ALPHABET).filter(lambda char: char != iban[position]),
        label="replacement",
    )
    mutant = iban[:position] + replacement + iban[position + 1 :]
    assert not is_pakistani_iban(mutant)


@given(pakistani_ibans(), st.data())
def test_any_adjacent_transposition_is_rejected(iban: str, data: st.DataObject) -> None:
    swappable = [i for i in range(len(iban) - 1) if iban[i] != iban[i + 1]]
    position = data.draw(st.sampled_from(swappable), label="position")
    mutant = iban[:position] + iban[position + 1] + iban[position] + iban[position + 2 :]
    assert not is_pakistani_iban(mutant)


def _other_script_digits() -> dict[int, tuple[str, ...]]:
    """Every non-ASCII Unicode decimal digit (category Nd), by its value."""
    by_value: dict[int, list[str]] = {value: [] for value in range(10)}
    for code in range(0x80, sys.maxunicode + 1):
        char = chr(code)
        if unicodedata.category(char) == "Nd":
            by_value[unicodedata.digit(char)].append(char)
    return {value: tuple(chars) for value, chars in by_value.items()}


OTHER_SCRIPT_DIGITS = _other_script_digits()


@given(pakistani_ibans(), st.data())
def test_digits_of_other_scripts_are_rejected(iban: str, data: st.DataObject) -> None:
    """Same value, different script (e.g. Arabic-Indic): the checksum cannot see it, so the
    format check must."""
    digit_positions = [i for i, char in enumerate(iban) if char.isdigit()]
    position = data.draw(st.sampled_from(digit_positions), label="position")
    replacement = data.draw(
        st.sampled_from(OTHER_SCRIPT_DIGITS[int(iban[position])]), label="replacement"
    )
    mutant = iban[:position] + replacement + iban[position + 1 :]
    assert not is_pakistani_iban(mutant)
    assert account_number_problem("BANK", mutant) is not None


def test_reference_iban_with_an_arabic_indic_digit_is_rejected() -> None:
    """shared/REFERENCE.md's example with its last digit 2 written as U+0662 (ARABIC-INDIC TWO)."""
    assert is_pakistani_iban("PK36SCBL0000001123456702")
    assert not is_pakistani_iban("PK36SCBL000000112345670\u0662")


@given(wallet_mobiles())
def test_wallet_mobiles_are_accepted(mobile: str) -> None:
    assert account_number_problem("WALLET", mobile) is None


def account_like_text() -> st.SearchStrategy[str]:
    """Mostly digit strings near the accepted shapes, plus arbitrary text."""
    return st.one_of(
        st.text(),
        st.text(alphabet=string.digits + "+ -", max_size=20),
        st.text(alphabet=st.characters(categories=["Nd"]), min_size=9, max_size=17),
        wallet_mobiles().map(lambda mobile: "+92" + mobile[1:]),
        digit_strings(0, 20),
    )


@given(account_like_text())
# 03001234567 in Arabic-Indic digits; the international +92 form is not accepted either.
@example("\u0660\u0663\u0660\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667")
@example("+923001234567")
def test_wallet_accepts_only_ascii_mobiles_and_plain_numbers(text: str) -> None:
    """WALLET: `03` + 9 digits (itself 11 digits) or 10-16 digits; nothing else."""
    accepted = account_number_problem("WALLET", text) is None
    assert accepted == bool(PLAIN_ACCOUNT.fullmatch(text))


@given(account_like_text())
@example("\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669\u0660")  # 1234567890
def test_bank_accepts_only_plain_numbers_and_ibans(text: str) -> None:
    accepted = account_number_problem("BANK", text) is None
    is_iban = bool(IBAN_SHAPE.fullmatch(text)) and is_valid_by_oracle(text)
    assert accepted == (bool(PLAIN_ACCOUNT.fullmatch(text)) or is_iban)


@given(
    st.one_of(
        st.text(),
        pakistani_ibans().map(lambda iban: " ".join(iban[i : i + 4] for i in range(0, 24, 4))),
        pakistani_ibans().map(str.lower),
        wallet_mobiles().map(lambda mobile: mobile[:4] + "-" + mobile[4:]),
    )
)
def test_normalize_is_idempotent(text: str) -> None:
    once = normalize_account_number(text)
    assert normalize_account_number(once) == once


@given(
    pakistani_ibans(),
    st.lists(st.sampled_from([" ", "-", "\t"]), min_size=0, max_size=6),
    st.data(),
)
def test_formatted_ibans_normalize_to_the_valid_iban(
    iban: str, separators: list[str], data: st.DataObject
) -> None:
    text = iban.lower() if data.draw(st.booleans(), label="lower") else iban
    for separator in separators:
        position = data.draw(st.integers(0, len(text)), label="at")
        text = text[:position] + separator + text[position:]
    assert normalize_account_number(text) == iban
