"""contracts.domain.accounts by example: Pakistani IBANs, wallet mobiles, plain numbers."""

import re
from pathlib import Path

import pytest

from contracts.domain.accounts import (
    account_number_problem,
    domestic_wallet_number,
    iban_bank_code,
    iban_checksum_ok,
    is_pakistani_iban,
    is_wallet_mobile,
    normalize_account_number,
)
from tests.support.strategies import oracle_check_digits

REFERENCE_IBAN = "PK36SCBL0000001123456702"  # shared/REFERENCE.md


def test_reference_iban_is_valid() -> None:
    assert is_pakistani_iban(REFERENCE_IBAN)
    assert iban_bank_code(REFERENCE_IBAN) == "SCBL"


def test_check_digits_rebuild_the_reference_iban() -> None:
    assert oracle_check_digits("PK", REFERENCE_IBAN[4:]) == "36"


@pytest.mark.parametrize(
    "iban",
    [
        "GB82WEST12345698765432",  # the ISO 13616 example, another country
        "DE89370400440532013000",
    ],
)
def test_checksum_is_country_independent(iban: str) -> None:
    assert iban_checksum_ok(iban)
    assert not is_pakistani_iban(iban)


@pytest.mark.parametrize(
    "iban",
    [
        "PK37SCBL0000001123456702",  # check digits off by one
        "PK36SCBL0000001123456720",  # two digits swapped
        "PK36SCBL000000112345670",  # 23 characters
        "PK36SCB10000001123456702",  # a digit in the bank code
        # Check digits ISO 7064 never gives, though they pass mod 97 (the right ones: 98, 97, 02)
        "PK00HABB0000000000000026",
        "PK01HABB0000000000870001",
        "PK99HABB0000000000000087",
    ],
)
def test_invalid_pakistani_ibans(iban: str) -> None:
    assert not is_pakistani_iban(iban)


PROBLEMS = [
    ("BANK", "1234567890", None),
    ("BANK", "1234567890123456", None),
    ("BANK", REFERENCE_IBAN, None),
    ("BANK", "123456789", "10-16 digits"),
    ("BANK", "12345678901234567", "10-16 digits"),
    ("BANK", "PK37SCBL0000001123456702", "not a valid Pakistani IBAN"),
    ("BANK", "\u0661" * 10, "digits 0-9"),  # named as such (unicode review)
    ("WALLET", "03001234567", None),
    ("WALLET", "1234567890", None),
    ("WALLET", REFERENCE_IBAN, "mobile number"),
    ("WALLET", "0300123456X", "mobile number"),
    ("WALLET", "\u0660\u0663" + "\u0661" * 9, "digits 0-9"),
]


@pytest.mark.parametrize(("dest_type", "number", "problem"), PROBLEMS)
def test_account_number_problem(dest_type: str, number: str, problem: str | None) -> None:
    found = account_number_problem(dest_type, number)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("pk36 scbl 0000 0011 2345 6702", REFERENCE_IBAN),
        ("0300-1234567", "03001234567"),
        ("\t03001234567\n", "03001234567"),
    ],
)
def test_normalize_account_number(raw: str, normalized: str) -> None:
    assert normalize_account_number(raw) == normalized


@pytest.mark.parametrize(
    "written",
    ["+923001234567", "00923001234567", "923001234567", "03001234567", "3001234567x"],
)
def test_a_wallet_mobile_written_internationally_is_its_domestic_number(written: str) -> None:
    expected = "03001234567" if written[-1].isdigit() else written
    assert domestic_wallet_number(written) == expected


def test_wallet_mobile_shape() -> None:
    assert is_wallet_mobile("03001234567")
    assert not is_wallet_mobile("3001234567")
    assert not is_wallet_mobile("030012345678")


def test_the_readme_gives_a_valid_iban_and_a_wallet_number_for_each_scenario() -> None:
    """A merchant reaching a scenario with an IBAN must recompute its check digits: the README
    now gives one per row, which must stay valid and end as the rows do."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    ibans = re.findall(r"`(PK\d\dHABB\d{16})`", readme)
    assert all(is_pakistani_iban(iban) and iban_bank_code(iban) == "HABB" for iban in ibans)
    assert {iban[-4:] for iban in ibans} == {f"{row:04}" for row in range(1, 10)}
    first, last = re.findall(r"`(03\d{9})` to\s+`(03\d{9})`", readme)[0]
    assert is_wallet_mobile(first) and is_wallet_mobile(last)
    assert (first[-4:], last[-4:]) == ("0001", "0009")
