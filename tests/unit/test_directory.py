"""The directory the tests expect (tests/support/directory.py) has shared/REFERENCE.md's shape."""

import re

from tests.support.directory import BANKS, WALLETS


def test_codes_are_unique_upper_case_and_not_shared_by_banks_and_wallets() -> None:
    codes = [entry.code for entry in (*BANKS, *WALLETS)]
    assert len(codes) == len(set(codes))
    assert all(code == code.upper() for code in codes)


def test_every_bank_has_a_distinct_four_letter_iban_code() -> None:
    iban_codes = [bank.iban_code for bank in BANKS]
    assert all(code is not None and re.fullmatch("[A-Z]{4}", code) for code in iban_codes)
    assert len(set(iban_codes)) == len(BANKS) == 19


def test_wallets_have_no_iban_code() -> None:
    assert {wallet.code for wallet in WALLETS} == {"EASYPAISA", "JAZZCASH", "SADAPAY", "NAYAPAY"}
    assert all(wallet.iban_code is None for wallet in WALLETS)
