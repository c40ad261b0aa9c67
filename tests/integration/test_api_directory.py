"""GET /directory and POST /verify-account."""

from typing import Any

import httpx
import pytest

from contracts.domain.directory import BANKS, WALLETS
from tests.conftest import MerchantFactory
from tests.support.api_helpers import API, assert_error, auth


async def test_directory_lists_banks_and_wallets(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    response = await api_client.get(f"{API}/directory", headers=auth(await make_merchant(), ""))
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    banks = {bank["code"]: bank for bank in data["banks"]}
    wallets = {wallet["code"]: wallet for wallet in data["wallets"]}
    assert {entry.code for entry in BANKS} <= set(banks)
    assert {entry.code for entry in WALLETS} <= set(wallets)
    assert not set(banks) & set(wallets)
    assert banks["HBL"] == {
        "code": "HBL",
        "name": "Habib Bank Limited",
        "isActive": True,
        "ibanCode": "HABB",
    }
    assert wallets["JAZZCASH"]["isActive"] is True
    assert wallets["JAZZCASH"]["name"].startswith("JazzCash")
    assert list(banks) == sorted(banks)


def _verify_body(**overrides: Any) -> dict[str, Any]:
    body = {"destType": "WALLET", "walletCode": "EASYPAISA", "accountNumber": "03001234567"}
    body.update(overrides)
    return {name: value for name, value in body.items() if value is not None}


VERIFY_CASES: dict[str, tuple[dict[str, Any], bool, str]] = {
    "wallet ok": ({}, True, "Account verified"),
    "bank ok": (
        {"destType": "BANK", "walletCode": None, "bankCode": "ubl", "accountNumber": "1234567890"},
        True,
        "Account verified",
    ),
    "suffix 0003 invalid": ({"accountNumber": "03001230003"}, False, "Account validation failed"),
    "suffix 0005 blocked": (
        {"accountNumber": "03001230005"},
        True,
        "Account is blocked or restricted",
    ),
    "malformed number": ({"accountNumber": "12"}, False, "accountNumber"),
}


@pytest.mark.parametrize(
    ("overrides", "valid", "message"), VERIFY_CASES.values(), ids=VERIFY_CASES.keys()
)
async def test_verify_account(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    overrides: dict[str, Any],
    valid: bool,
    message: str,
) -> None:
    response = await api_client.post(
        f"{API}/verify-account", json=_verify_body(**overrides), headers=auth(await make_merchant())
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["isValid"] is valid
    assert message in data["message"]
    assert ("accountTitle" in data) is valid


async def test_verify_account_title_is_stable_for_an_account(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()
    titles = set()
    for _ in range(2):
        response = await api_client.post(
            f"{API}/verify-account", json=_verify_body(), headers=auth(merchant)
        )
        titles.add(response.json()["data"]["accountTitle"])
    assert len(titles) == 1


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"destType": "CARD"}, "destType"),
        ({"walletCode": "NOPE"}, "walletCode"),
        ({"walletCode": None}, "walletCode"),
        ({"destType": "BANK", "bankCode": "JAZZCASH"}, "bankCode"),
        ({"accountNumber": None}, "accountNumber"),
    ],
)
async def test_verify_account_rejects_an_invalid_request(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    overrides: dict[str, Any],
    field: str,
) -> None:
    response = await api_client.post(
        f"{API}/verify-account", json=_verify_body(**overrides), headers=auth(await make_merchant())
    )
    assert_error(response, 400, "VALIDATION_ERROR", field)
