"""Hypothesis strategies for the payments domain: PKR amounts, Pakistani IBANs, wallet mobiles,
webhook secrets.

The IBAN check digits are computed here with an oracle of our own (digit-by-digit mod 97), not
with contracts.domain.accounts, so the property tests compare two independent implementations.
"""

import base64
import string
from decimal import Decimal

from hypothesis import strategies as st

from tests.support.directory import BANKS

MAX_AMOUNT_CENTS = 1_000_000_000  # 10,000,000.00 PKR
ASCII_DIGITS = string.digits
IBAN_ALPHABET = string.digits + string.ascii_uppercase
IBAN_BANK_CODES = tuple(bank.iban_code for bank in BANKS if bank.iban_code)


def cents_to_amount(cents: int) -> Decimal:
    """Integer paisa -> an exact 2-decimal Decimal (never through a float)."""
    return Decimal(cents).scaleb(-2)


def amounts(min_cents: int = 1, max_cents: int = MAX_AMOUNT_CENTS) -> st.SearchStrategy[Decimal]:
    """2-decimal PKR amounts in [min_cents, max_cents] paisa."""
    return st.integers(min_cents, max_cents).map(cents_to_amount)


def digit_strings(min_size: int, max_size: int | None = None) -> st.SearchStrategy[str]:
    """ASCII digits only (`\\d` in a Python regex would also allow other scripts' digits)."""
    size = max_size if max_size is not None else min_size
    return st.text(ASCII_DIGITS, min_size=min_size, max_size=size)


def iban_mod97(text: str) -> int:
    """ISO 7064 mod 97-10 of an IBAN-ordered string, one character at a time (A=10 ... Z=35)."""
    remainder = 0
    for char in text:
        value = int(char) if char in ASCII_DIGITS else ord(char) - ord("A") + 10
        remainder = (remainder * (10 if value < 10 else 100) + value) % 97
    return remainder


def oracle_check_digits(country: str, bban: str) -> str:
    return f"{98 - iban_mod97(bban + country + '00'):02d}"


@st.composite
def pakistani_ibans(draw: st.DrawFn) -> str:
    """`PK` + check digits + a directory bank's IBAN code + 16 digits."""
    bban = draw(st.sampled_from(IBAN_BANK_CODES)) + draw(digit_strings(16))
    return "PK" + oracle_check_digits("PK", bban) + bban


def wallet_mobiles() -> st.SearchStrategy[str]:
    """Domestic mobile numbers: `03` + 9 digits."""
    return digit_strings(9).map(lambda rest: "03" + rest)


def webhook_secrets() -> st.SearchStrategy[str]:
    """`whsec_<base64>` of 1-64 random key bytes (ours use 32)."""
    return st.binary(min_size=1, max_size=64).map(
        lambda key: "whsec_" + base64.b64encode(key).decode()
    )
