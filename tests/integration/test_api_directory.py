"""GET /directory and POST /verify-account; the directory comes with the migrations."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from alembic import command
from sqlalchemy import make_url, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from api_service.app import create_app
from api_service.directory.active import ACTIVE_DIRECTORY
from contracts.db.engine import (
    SessionFactory,
    create_engine,
    create_session_factory,
    transaction,
)
from contracts.db.models import DirectoryInstitution
from contracts.settings import Settings
from migrations.runner import alembic_config, upgrade_to_head
from tests.conftest import MerchantFactory
from tests.support.api_helpers import (
    API,
    assert_error,
    auth,
    create_payout,
    new_merchant,
    payout_body,
)
from tests.support.directory import BANKS, WALLETS

DIRECTORY = {
    *((bank.code, "BANK", bank.name, bank.iban_code) for bank in BANKS),
    *((wallet.code, "WALLET", wallet.name, None) for wallet in WALLETS),
}


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


@pytest.fixture
async def empty_database(engine: AsyncEngine, settings: Settings) -> AsyncIterator[str]:
    """The URL of a brand-new database of this test's own (not the session's), dropped after."""
    url = make_url(settings.database_url)
    name = f"{url.database}_fresh"
    async with engine.begin() as connection:
        await connection.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        await connection.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        async with engine.begin() as connection:
            await connection.execute(text(f"DROP DATABASE `{name}`"))


async def migrate(database_url: str, revision: str = "head") -> None:
    # Alembic's env.py runs an event loop of its own: not on this one.
    if revision == "head":
        await asyncio.to_thread(upgrade_to_head, database_url)
    else:
        await asyncio.to_thread(command.upgrade, alembic_config(database_url), revision)


async def directory_rows(database_url: str) -> list[DirectoryInstitution]:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with create_session_factory(engine)() as session:
            return list(await session.scalars(select(DirectoryInstitution)))
    finally:
        await engine.dispose()


async def test_migrate_alone_loads_the_directory_the_api_lists(
    empty_database: str, settings: Settings
) -> None:
    """`payouts migrate` on an empty database is enough to take payouts: no seed step."""
    await migrate(empty_database)

    rows = await directory_rows(empty_database)
    assert {(row.code, row.kind, row.name, row.iban_code) for row in rows} == DIRECTORY
    assert all(row.is_active for row in rows)

    app = create_app(settings.model_copy(update={"database_url": empty_database}))
    async with app.router.lifespan_context(app):
        merchant = await new_merchant(app.state.sessions)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            response = await client.get(f"{API}/directory", headers=auth(merchant, ""))
    assert response.status_code == 200, response.text
    listed = response.json()["data"]
    active = {
        entry["code"]
        for kind in ("banks", "wallets")
        for entry in listed[kind]
        if entry["isActive"]
    }
    assert {"HBL", "UBL", "EASYPAISA", "JAZZCASH"} <= active
    assert active == {code for code, *_ in DIRECTORY}


async def test_migrate_keeps_a_directory_seeded_before_it_loaded_one(empty_database: str) -> None:
    """Databases from before revision 0005 were loaded by `payouts seed`, and an operator may
    have deactivated a bank since: the upgrade adds only what is missing."""
    await migrate(empty_database, "0004")
    engine = create_engine(empty_database, pool_size=1)
    try:
        async with transaction(create_session_factory(engine)) as session:
            session.add(
                DirectoryInstitution(
                    code="HBL",
                    kind="BANK",
                    name="Habib Bank Limited",
                    iban_code="HABB",
                    is_active=False,
                )
            )
    finally:
        await engine.dispose()

    await migrate(empty_database)

    rows = {row.code: row for row in await directory_rows(empty_database)}
    assert {(row.code, row.kind, row.name, row.iban_code) for row in rows.values()} == DIRECTORY
    assert not rows["HBL"].is_active
    assert rows["UBL"].is_active


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
    "wallet mobile written internationally": ({"accountNumber": "+923001234567"}, True, "verified"),
    # Spaces around a text value are trimmed, a Literal's too: " WALLET " was a 400.
    "spaces around every field": (
        {"destType": " WALLET\n", "walletCode": " easypaisa ", "accountNumber": " 03001234567 "},
        True,
        "verified",
    ),
    "IBAN check digits never issued": (  # passes mod 97 as its right check digits (98) do
        {"destType": "BANK", "walletCode": None, "bankCode": "HBL"}
        | {"accountNumber": "PK01HABB0000000000870001"},
        False,
        "not a valid Pakistani IBAN",
    ),
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


async def _switch(sessions: SessionFactory, code: str, *, active: bool) -> None:
    async with transaction(sessions) as session:
        await session.execute(
            update(DirectoryInstitution)
            .where(DirectoryInstitution.code == code)
            .values(is_active=active)
        )


async def test_a_code_switched_on_is_taken_at_once(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The API keeps a copy of the active codes for a few seconds; a code it does not know is
    looked up again before the refusal, which the idempotency key would replay for a day."""
    merchant = await make_merchant()
    bank = {"destType": "BANK", "bankCode": "SINDH", "walletCode": None}
    await _switch(sessions, "SINDH", active=False)
    try:
        monkeypatch.setattr(ACTIVE_DIRECTORY, "_loaded_at", float("-inf"))
        await create_payout(api_client, merchant)  # the copy is read while SINDH is off
    finally:
        await _switch(sessions, "SINDH", active=True)
    verified = await api_client.post(
        f"{API}/verify-account", json=_verify_body(**bank), headers=auth(merchant)
    )
    assert verified.status_code == 200, verified.text
    created = await api_client.post(
        f"{API}/payouts",
        json=payout_body(**bank, accountNumber="1234567890"),
        headers=auth(merchant),
    )
    assert created.status_code == 201, created.text
