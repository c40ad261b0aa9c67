"""POST /payouts validation: 400 VALIDATION_ERROR with `details` naming the field, nothing
written; accepted input normalized as the contract says."""

import unicodedata
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import update
from sqlalchemy.dialects.mysql import insert as mysql_insert

from api_service.directory.active import ACTIVE_DIRECTORY
from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.db.models import DirectoryInstitution
from contracts.domain.statuses import FailureCode
from contracts.payout_queue import SWITCHED_OFF_REASON
from tests.conftest import MerchantFactory
from tests.support.api_helpers import API, assert_error, auth, fail_payout, footprint, payout_body
from tests.support.payout_records import expired_by
from tests.support.strategies import oracle_check_digits


def pk_iban(bank: str, account: str = "0000001123456702") -> str:
    return f"PK{oracle_check_digits('PK', bank + account)}{bank}{account}"


VALID_HBL_IBAN = pk_iban("HABB")
BAD_CHECKSUM_IBAN = f"PK{(int(VALID_HBL_IBAN[2:4]) + 1) % 100:02d}{VALID_HBL_IBAN[4:]}"


@pytest.fixture(scope="module", autouse=True)
async def inactive_institutions(sessions: SessionFactory) -> None:
    """A bank and a wallet that are in the directory but switched off."""
    rows: list[dict[str, Any]] = [
        {"code": "OLDBANK", "kind": "BANK", "name": "Closed Bank", "iban_code": "OLDB"},
        {"code": "OLDWALLET", "kind": "WALLET", "name": "Closed Wallet", "iban_code": None},
    ]
    async with transaction(sessions) as session:
        statement = mysql_insert(DirectoryInstitution).values(
            [{**row, "is_active": False} for row in rows]
        )
        await session.execute(statement.on_duplicate_key_update(is_active=False))


NO_IBAN_CODE_BANK = "NOIBANBANK"


@pytest.fixture
async def bank_without_iban_code(sessions: SessionFactory, monkeypatch: pytest.MonkeyPatch) -> str:
    """An active bank an operator added to the directory without an IBAN bank code, seen at
    once (the directory's 10-second cache read again)."""
    monkeypatch.setattr(ACTIVE_DIRECTORY, "refresh_seconds", 0.0)
    row = {"code": NO_IBAN_CODE_BANK, "kind": "BANK", "name": "No IBAN Bank", "iban_code": None}
    async with transaction(sessions) as session:
        statement = mysql_insert(DirectoryInstitution).values({**row, "is_active": True})
        await session.execute(statement.on_duplicate_key_update(is_active=True))
    return NO_IBAN_CODE_BANK


BANK = {"destType": "BANK", "walletCode": None, "bankCode": "HBL", "accountNumber": "1234567890"}

INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "destType lower-case": ({"destType": "wallet"}, "destType"),
    "destType unknown": ({"destType": "CARD"}, "destType"),
    "destType missing": ({"destType": None}, "destType"),
    "destType number": ({"destType": 1}, "destType"),
    "bankCode missing for BANK": ({**BANK, "bankCode": None}, "bankCode"),
    "bankCode unknown": ({**BANK, "bankCode": "NOPE"}, "bankCode"),
    "bankCode is a wallet": ({**BANK, "bankCode": "JAZZCASH"}, "bankCode"),
    "bankCode inactive": ({**BANK, "bankCode": "OLDBANK"}, "bankCode"),
    "bankCode empty": ({**BANK, "bankCode": ""}, "bankCode"),
    "walletCode missing for WALLET": ({"walletCode": None}, "walletCode"),
    # Both codes: the other one was dropped and the payout made to the destType's.
    "walletCode for BANK": ({**BANK, "walletCode": "JAZZCASH"}, "walletCode"),
    "bankCode for WALLET": ({"bankCode": "HBL"}, "bankCode"),
    "walletCode is a bank": ({"walletCode": "HBL"}, "walletCode"),
    "walletCode inactive": ({"walletCode": "oldwallet"}, "walletCode"),
    "accountNumber missing": ({"accountNumber": None}, "accountNumber"),
    "accountNumber 9 digits": ({**BANK, "accountNumber": "123456789"}, "accountNumber"),
    "accountNumber 17 digits": ({**BANK, "accountNumber": "1" * 17}, "accountNumber"),
    "accountNumber letters": ({**BANK, "accountNumber": "12345ABCDE"}, "accountNumber"),
    "accountNumber non-ASCII digits": (
        {**BANK, "accountNumber": "\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669\u0660"},
        "accountNumber",
    ),
    "accountNumber number type": ({**BANK, "accountNumber": 1234567890}, "accountNumber"),
    "IBAN bad checksum": ({**BANK, "accountNumber": BAD_CHECKSUM_IBAN}, "accountNumber"),
    "IBAN too short": ({**BANK, "accountNumber": VALID_HBL_IBAN[:-1]}, "accountNumber"),
    "IBAN of another bank": ({**BANK, "accountNumber": pk_iban("SCBL")}, "accountNumber"),
    "IBAN of another country": (
        {**BANK, "accountNumber": "GB82WEST12345698765432"},
        "accountNumber",
    ),
    "IBAN for a wallet": ({"accountNumber": VALID_HBL_IBAN}, "accountNumber"),
    # Letters str.upper() turns into ASCII ones (U+017F, the long s, into S; U+0131, the dotless
    # i, into I): the IBAN and the codes were taken, stored as text the merchant never sent.
    "IBAN with a long s in its bank code": (
        {**BANK, "bankCode": "SCB", "accountNumber": pk_iban("SCBL").replace("S", "\u017f")},
        "accountNumber",
    ),
    "bankCode with a long s": ({**BANK, "bankCode": "\u017fcb"}, "bankCode"),
    "bankCode with a dotless i": ({**BANK, "bankCode": "askar\u0131"}, "bankCode"),
    "walletCode with a long s": ({"walletCode": "jazzca\u017fh"}, "walletCode"),
    "wallet mobile too short": ({"accountNumber": "030012345"}, "accountNumber"),
    "wallet mobile with letters": ({"accountNumber": "0300123456X"}, "accountNumber"),
    "merchantReference empty": ({"merchantReference": ""}, "merchantReference"),
    "merchantReference 65 chars": ({"merchantReference": "r" * 65}, "merchantReference"),
    "merchantReference space": ({"merchantReference": "order 1"}, "merchantReference"),
    "merchantReference slash": ({"merchantReference": "order/1"}, "merchantReference"),
    "merchantReference accent": ({"merchantReference": "r\u00e9f-1"}, "merchantReference"),
    "merchantReference missing": ({"merchantReference": None}, "merchantReference"),
    "merchantReference number": ({"merchantReference": 12345}, "merchantReference"),
    "accountTitle 101 chars": ({"accountTitle": "t" * 101}, "accountTitle"),
    "accountTitle number": ({"accountTitle": 7}, "accountTitle"),
    # Information separators (U+001C-U+001F) are control characters that str.strip() takes for
    # spaces: trimmed, a value ending in one was accepted with it cut off.
    "accountTitle ending in a separator": ({"accountTitle": "Ali Khan\x1f"}, "accountTitle"),
    "destType after a separator": ({"destType": "\x1eWALLET"}, "destType"),
    "amount ending in a separator": ({"amount": "10.00\x1c"}, "amount"),
    # Invisible characters that change how the text reads: U+202E showed the rest of a title
    # backwards in the dashboard ("Trojan Source"), U+200B made two titles that look alike differ.
    "accountTitle with a right-to-left override": (
        {"accountTitle": "Ali \u202enahK"},
        "accountTitle",
    ),
    "accountTitle with a zero width space": ({"accountTitle": "Ali\u200bKhan"}, "accountTitle"),
    "accountTitle with a line separator inside": (
        {"accountTitle": "Ali\u2028Khan"},
        "accountTitle",
    ),
    "purpose with a left-to-right override": ({"purpose": "salary \u202dyraS"}, "purpose"),
    "purpose after a byte order mark": ({"purpose": "\ufeffsalary"}, "purpose"),
    # Nothing to see: stored and paid to, blank on every screen (unicode review).
    "accountTitle of direction marks only": ({"accountTitle": "\u200e\u200f"}, "accountTitle"),
    "accountTitle a Hangul filler": ({"accountTitle": "\u3164"}, "accountTitle"),
    "purpose a braille blank": ({"purpose": "\u2800"}, "purpose"),
    "currency USD": ({"currency": "USD"}, "currency"),
    "purpose 141 chars": ({"purpose": "p" * 141}, "purpose"),
    "amount missing": ({"amount": None}, "amount"),
}


@pytest.mark.parametrize(("overrides", "field"), INVALID.values(), ids=INVALID.keys())
async def test_invalid_field_is_400_naming_it_and_writes_nothing(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    overrides: dict[str, Any],
    field: str,
) -> None:
    merchant = await make_merchant()
    before = await footprint(sessions, merchant.merchant_id)
    response = await api_client.post(
        f"{API}/payouts", json=payout_body(**overrides), headers=auth(merchant)
    )
    assert_error(response, 400, "VALIDATION_ERROR", field)
    assert await footprint(sessions, merchant.merchant_id) == before


async def test_no_iban_names_a_bank_without_an_iban_code(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    bank_without_iban_code: str,
) -> None:
    """An HBL IBAN (HABB) for a bank the directory gives no IBAN code was a 201: the money went
    to an HBL account under another bank's name. Its plain account numbers stay accepted."""
    merchant = await make_merchant()
    before = await footprint(sessions, merchant.merchant_id)
    bank = {**BANK, "bankCode": bank_without_iban_code}
    response = await api_client.post(
        f"{API}/payouts",
        json=payout_body(**{**bank, "accountNumber": VALID_HBL_IBAN}),
        headers=auth(merchant),
    )
    assert_error(response, 400, "VALIDATION_ERROR", "accountNumber")
    assert await footprint(sessions, merchant.merchant_id) == before

    plain = await api_client.post(
        f"{API}/payouts", json=payout_body(**bank), headers=auth(merchant)
    )
    assert plain.status_code == 201, plain.text


# JSON literals, sent as written: a float parser would turn 0.1 + 0.2 into 0.30000000000000004.
INVALID_AMOUNTS = {
    "zero": "0",
    "zero string": '"0.00"',
    "negative": "-1",
    "negative string": '"-100.00"',
    "over the maximum": "10000000.01",
    "over the maximum string": '"10000000.01"',
    "three decimals": "1.005",
    "three decimals string": '"1.005"',
    "three decimals string with trailing zero": '"12.500"',
    "plus sign string": '"+5"',
    "tiny": "0.001",
    "true": "true",
    "false": "false",
    "null": "null",
    "word": '"abc"',
    "empty string": '""',
    "NaN string": '"NaN"',
    "Infinity string": '"Infinity"',
    "exponent string": '"1e3"',
    "underscore string": '"1_000"',
    "non-ASCII digits string": '"\u0661\u0665\u0660\u0660"',
    "array": "[100]",
    "object": '{"value": 100}',
    "huge integer": "1" + "0" * 5000,
    "huge exponent": "1e999999",
}


def _body_with_amount(literal: str) -> bytes:
    body = payout_body(amount=None)
    return orjson.dumps(body)[:-1] + b', "amount": ' + literal.encode() + b"}"


@pytest.mark.parametrize("literal", INVALID_AMOUNTS.values(), ids=INVALID_AMOUNTS.keys())
async def test_invalid_amount_is_400_naming_amount(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    literal: str,
) -> None:
    merchant = await make_merchant()
    response = await api_client.post(
        f"{API}/payouts",
        content=_body_with_amount(literal),
        headers={**auth(merchant), "Content-Type": "application/json"},
    )
    assert_error(response, 400, "VALIDATION_ERROR", "amount")
    assert (await footprint(sessions, merchant.merchant_id)).payouts == 0


VALID_AMOUNTS = {
    "integer": ("1500", "1500.00"),
    "one decimal": ("1500.5", "1500.50"),
    "two decimals": ("0.01", "0.01"),
    "trailing zero beyond cents": ("12.500", "12.50"),
    "exponent number": ("1.5e3", "1500.00"),
    "string": ('"1500.00"', "1500.00"),
    "string integer": ('"1500"', "1500.00"),
    "string one decimal": ('"0.5"', "0.50"),
    "maximum": ("10000000", "10000000.00"),
    "maximum string": ('"10000000.00"', "10000000.00"),
}


@pytest.mark.parametrize(("literal", "stored"), VALID_AMOUNTS.values(), ids=VALID_AMOUNTS.keys())
async def test_amount_number_or_string_is_stored_with_two_decimals(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, literal: str, stored: str
) -> None:
    merchant = await make_merchant(balance="20000000.00")
    response = await api_client.post(
        f"{API}/payouts",
        content=_body_with_amount(literal),
        headers={**auth(merchant), "Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["data"]["amount"] == stored


NAME_OF_100_LETTERS = ("\u0622\u0645\u0646\u06c1 \u06c2 Jos\u00e9 " * 10)[:99] + "x"

VALID: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "bankCode lower-case": ({**BANK, "bankCode": "hbl"}, {"bankCode": "HBL", "walletCode": None}),
    "walletCode mixed case": ({"walletCode": "JazzCash"}, {"walletCode": "JAZZCASH"}),
    "10 digits": ({**BANK, "accountNumber": "1234567890"}, {"accountNumber": "1234567890"}),
    "16 digits": ({**BANK, "accountNumber": "1" * 16}, {"accountNumber": "1" * 16}),
    "IBAN matching the bank": (
        {**BANK, "accountNumber": VALID_HBL_IBAN},
        {"accountNumber": VALID_HBL_IBAN},
    ),
    "IBAN lower-case with spaces": (
        {
            **BANK,
            "bankCode": "SCB",
            "accountNumber": "pk36 scbl 0000 0011 2345 6702",
        },
        {"accountNumber": "PK36SCBL0000001123456702", "bankCode": "SCB"},
    ),
    "wallet mobile with a dash": (
        {"accountNumber": "0300-1234567"},
        {"accountNumber": "03001234567"},
    ),
    # REFERENCE.md: `+923...` internationally. It was refused, and 0092/92 forms were stored as
    # other accounts.
    "wallet mobile written internationally": (
        {"accountNumber": "+92 300 1234567"},
        {"accountNumber": "03001234567"},
    ),
    "wallet mobile with 0092": (
        {"accountNumber": "0092-300-1234567"},
        {"accountNumber": "03001234567"},
    ),
    # Copied from right-to-left text (unicode review): refused as "must be 10-16 digits or a
    # mobile number 03XXXXXXXXX", which is what the merchant saw on the screen.
    "wallet mobile shared from WhatsApp": (
        {"accountNumber": "\u202a+92 300 1234567\u202c"},
        {"accountNumber": "03001234567"},
    ),
    "wallet mobile after a left-to-right mark": (
        {"accountNumber": "\u200e03001234567"},
        {"accountNumber": "03001234567"},
    ),
    "wallet mobile with a non-breaking hyphen": (
        {"accountNumber": "0300\u20111234567"},
        {"accountNumber": "03001234567"},
    ),
    "IBAN in a left-to-right isolate": (
        {**BANK, "bankCode": "SCB", "accountNumber": "\u2066PK36 SCBL 0000 0011 2345 6702\u2069"},
        {"accountNumber": "PK36SCBL0000001123456702", "bankCode": "SCB"},
    ),
    # A spreadsheet drops the leading 0 of a payroll's mobiles: stored as another account.
    "wallet mobile without its leading 0": (
        {"accountNumber": "3001234567"},
        {"accountNumber": "03001234567"},
    ),
    "bank account starting with 3": (
        {**BANK, "accountNumber": "3001234567"},
        {"accountNumber": "3001234567"},
    ),
    "merchantReference every allowed character": (
        {"merchantReference": "Az09._:-" + "x" * 56},
        {"merchantReference": "Az09._:-" + "x" * 56},
    ),
    "accountTitle default": ({}, {"accountTitle": "Account Holder"}),
    "accountTitle 100 chars": ({"accountTitle": "t" * 100}, {"accountTitle": "t" * 100}),
    "accountTitle in Urdu": (
        {"accountTitle": "\u0645\u062d\u0645\u062f \u0639\u0644\u06cc"},
        {"accountTitle": "\u0645\u062d\u0645\u062f \u0639\u0644\u06cc"},
    ),
    # The joiners and direction marks Urdu and Arabic text needs are not refused with the other
    # invisible characters.
    "accountTitle in Urdu with a non-joiner and a mark": (
        {"accountTitle": "\u0645\u062d\u0645\u062f\u200c\u0639\u0644\u06cc\u200f (PK)"},
        {"accountTitle": "\u0645\u062d\u0645\u062f\u200c\u0639\u0644\u06cc\u200f (PK)"},
    ),
    "currency PKR": ({"currency": "PKR"}, {"currency": "PKR"}),
    # Composed (NFC), as most keyboards write it: the name with its madda, hamza or accent as a
    # mark after its letter (NFD: macOS, some Urdu input methods) was stored in other bytes, and
    # these 100 letters were counted as 125, a 400 (text review).
    "accountTitle of 100 letters in NFD": (
        {"accountTitle": unicodedata.normalize("NFD", NAME_OF_100_LETTERS)},
        {"accountTitle": NAME_OF_100_LETTERS},
    ),
    # ... unless composing lengthens it: NFC splits U+0958 DEVANAGARI LETTER QA in two, and 100
    # of them were refused as over 100 (diff review).
    "accountTitle of 100 letters NFC would split": (
        {"accountTitle": "\u0958" * 100},
        {"accountTitle": "\u0958" * 100},
    ),
    # Trimmed like every text value: str_strip_whitespace does not reach a Literal (it was a 400).
    "destType with spaces around it": ({"destType": " WALLET\n"}, {"destType": "WALLET"}),
}


@pytest.mark.parametrize(("overrides", "expected"), VALID.values(), ids=VALID.keys())
async def test_valid_input_is_accepted_and_normalized(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    overrides: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    merchant = await make_merchant()
    response = await api_client.post(
        f"{API}/payouts", json=payout_body(**overrides), headers=auth(merchant)
    )
    assert response.status_code == 201, response.text
    created = response.json()["data"]
    assert {name: created[name] for name in expected} == expected
    fetched = await api_client.get(
        f"{API}/payouts/{created['id']}", headers={"X-API-KEY": merchant.api_key}
    )
    assert {name: fetched.json()["data"][name] for name in expected} == expected


async def test_null_for_an_optional_field_is_the_field_left_out(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    """Many clients serialize a field they do not set as null: it takes its default. A
    required field sent as null is still a 400 naming it."""
    merchant = await make_merchant()
    optional = {"accountTitle": None, "currency": None, "purpose": None, "queueIfLowBalance": None}

    response = await api_client.post(
        f"{API}/payouts", json=payout_body() | optional, headers=auth(merchant)
    )
    assert response.status_code == 201, response.text
    created = response.json()["data"]
    assert (created["accountTitle"], created["currency"], created["status"]) == (
        "Account Holder",
        "PKR",
        "PENDING",
    )

    response = await api_client.post(
        f"{API}/payouts", json=payout_body() | {"accountNumber": None}, headers=auth(merchant)
    )
    assert response.status_code == 400
    assert [error["field"] for error in response.json()["error"]["details"]] == ["accountNumber"]


async def test_digits_of_another_script_are_named_as_such(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    """An Urdu keyboard's digits were refused as "must be 10-16 digits or a mobile number
    03XXXXXXXXX": eleven digits to the merchant's eye (unicode review)."""
    merchant = await make_merchant()
    urdu_digits = "".join(chr(0x06F0 + int(digit)) for digit in "03001234567")
    response = await api_client.post(
        f"{API}/payouts", json=payout_body(accountNumber=urdu_digits), headers=auth(merchant)
    )
    assert response.status_code == 400
    assert response.json()["error"]["details"] == [
        {"field": "accountNumber", "message": "must be written with the digits 0-9"}
    ]


async def test_several_invalid_fields_are_all_named(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    response = await api_client.post(
        f"{API}/payouts",
        json=payout_body(amount=True, destType="X", merchantReference=""),
        headers=auth(await make_merchant()),
    )
    error = assert_error(response, 400, "VALIDATION_ERROR")
    assert {"amount", "destType", "merchantReference"} <= {d["field"] for d in error["details"]}


DESTINATION_AND_OTHER_PROBLEMS = {
    # Each destination problem was named only once the ones before it were fixed.
    "bank and account number": (
        {"destType": "BANK", "bankCode": "XYZ", "walletCode": None, "accountNumber": "12"},
        ["bankCode", "accountNumber"],
    ),
    "reference and IBAN": (
        {
            "merchantReference": "bad ref",
            "destType": "BANK",
            "bankCode": "HBL",
            "walletCode": None,
            "accountNumber": BAD_CHECKSUM_IBAN,
        },
        ["merchantReference", "accountNumber"],
    ),
    "unknown bank, account number too long": (
        {"destType": "BANK", "bankCode": "XYZ", "walletCode": None, "accountNumber": "1" * 41},
        ["bankCode", "accountNumber"],
    ),
    "empty wallet code, unknown bank, short number": (
        {"destType": "BANK", "bankCode": "XYZ", "walletCode": "", "accountNumber": "12"},
        ["walletCode", "bankCode", "accountNumber"],
    ),
    "unknown bank, no account number, snake case": (
        {
            "dest_type": "BANK",
            "destType": None,
            "bank_code": "XYZ",
            "walletCode": None,
            "accountNumber": None,
        },
        ["bankCode", "accountNumber"],
    ),
    "amount, reference, wallet and both codes": (
        {"amount": "-1", "merchantReference": "", "walletCode": "NOPE", "bankCode": "HBL"},
        ["merchantReference", "amount", "walletCode", "bankCode"],
    ),
}


@pytest.mark.parametrize(
    ("fields", "named"),
    DESTINATION_AND_OTHER_PROBLEMS.values(),
    ids=DESTINATION_AND_OTHER_PROBLEMS.keys(),
)
async def test_the_destination_is_judged_with_the_other_fields(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    fields: dict[str, Any],
    named: list[str],
) -> None:
    """A body is told every problem at once, in a create as in a payroll's item."""
    merchant = await make_merchant()
    before = await footprint(sessions, merchant.merchant_id)
    body = payout_body(**fields)
    single = await api_client.post(f"{API}/payouts", json=body, headers=auth(merchant))
    payroll = await api_client.post(
        f"{API}/payouts/batch", json={"payouts": [body]}, headers=auth(merchant)
    )

    error = assert_error(single, 400, "VALIDATION_ERROR")
    assert sorted(detail["field"] for detail in error["details"]) == sorted(named), error
    assert payroll.status_code == 200, payroll.text
    [item] = payroll.json()["data"]["results"]
    assert item["status"] == "invalid"
    assert sorted(detail["field"] for detail in item["errors"]) == sorted(named), item
    assert await footprint(sessions, merchant.merchant_id) == before


async def test_a_payout_to_a_bank_switched_off_since_is_not_reinitiated(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    bank_without_iban_code: str,
) -> None:
    """The directory was checked at create only: a FAILED payout to a bank switched off since (a
    merger, say) was sent again on reinitiate (a suspicion of the PSP review, proved here)."""
    merchant = await make_merchant()
    bank = {**BANK, "bankCode": bank_without_iban_code}
    created = await api_client.post(
        f"{API}/payouts", json=payout_body(**bank), headers=auth(merchant)
    )
    assert created.status_code == 201, created.text
    await fail_payout(sessions, created.json()["data"]["id"])
    async with transaction(sessions) as session:
        await session.execute(
            update(DirectoryInstitution)
            .where(DirectoryInstitution.code == bank_without_iban_code)
            .values(is_active=False)
        )
    before = await footprint(sessions, merchant.merchant_id)

    again = await api_client.post(
        f"{API}/payouts/{created.json()['data']['id']}/reinitiate", headers=auth(merchant)
    )

    assert_error(again, 400, "VALIDATION_ERROR", "bankCode")
    assert await footprint(sessions, merchant.merchant_id) == before


async def test_a_queued_payout_to_a_bank_switched_off_since_waits_and_the_queue_goes_on(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    bank_without_iban_code: str,
) -> None:
    """A top-up started it all the same: sent to a bank a create or a reinitiation is refused
    (bene review). It waits, QUEUED, and a payout queued behind it starts."""
    merchant = await make_merchant(balance=Decimal("0"))
    bank = {**BANK, "bankCode": bank_without_iban_code, "queueIfLowBalance": True}
    to_closed = await api_client.post(
        f"{API}/payouts", json=payout_body(**bank), headers=auth(merchant)
    )
    behind = await api_client.post(
        f"{API}/payouts", json=payout_body(queueIfLowBalance=True), headers=auth(merchant)
    )
    assert [to_closed.json()["data"]["status"], behind.json()["data"]["status"]] == ["QUEUED"] * 2
    async with transaction(sessions) as session:
        await session.execute(
            update(DirectoryInstitution)
            .where(DirectoryInstitution.code == bank_without_iban_code)
            .values(is_active=False)
        )

    topped = await api_client.post(
        f"{API}/sandbox/top-up", json={"amount": "1000.00"}, headers=auth(merchant)
    )

    assert topped.status_code == 200, topped.text
    started = [payout["id"] for payout in topped.json()["data"]["startedPayouts"]]
    assert started == [behind.json()["data"]["id"]]
    closed = await api_client.get(
        f"{API}/payouts/{to_closed.json()['data']['id']}", headers=auth(merchant, "")
    )
    assert closed.json()["data"]["status"] == "QUEUED"
    # Its expiry says why it did not start: not for a balance that covered it (diff review).
    expired = await expired_by(sessions, merchant.merchant_id, utcnow() + timedelta(days=4))
    assert [(payout.failure_code, payout.failure_reason) for payout in expired] == [
        (FailureCode.QUEUE_EXPIRED, SWITCHED_OFF_REASON)
    ]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("accountTitle", "A" * 101, "must be at most 100 characters, not 101"),
        ("accountTitle", "", "must not be empty"),
        ("purpose", "\u0639" * 141, "must be at most 140 characters, not 141"),
    ],
)
async def test_a_text_of_the_wrong_length_is_refused_in_characters(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    field: str,
    value: str,
    message: str,
) -> None:
    """ "Value should have at most 100 items after validation", pydantic's words for a list
    (bene review)."""
    merchant = await make_merchant()
    response = await api_client.post(
        f"{API}/payouts", json=payout_body(**{field: value}), headers=auth(merchant)
    )
    error = assert_error(response, 400, "VALIDATION_ERROR", field)
    assert error["details"] == [{"field": field, "message": message}]
