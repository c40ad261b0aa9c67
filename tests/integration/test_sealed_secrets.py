"""Merchants' webhook secrets are stored sealed (contracts.secrets_at_rest): what the database
holds reveals no secret, every reader still gets the secret, the migration seals what was
stored before it, and `payouts secrets reseal` moves them to a new key."""

import asyncio
import base64
import secrets
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import create_async_engine
from typer.testing import CliRunner, Result

from cli.main import app as payouts
from contracts.db.engine import SessionFactory, transaction
from contracts.db.models import WITH_WEBHOOK_SECRETS, Merchant
from contracts.db.sealed import keyring
from contracts.secrets_at_rest import DEVELOPMENT_SECRETS_KEY, SEALED_PREFIX, SecretsKeyring
from contracts.settings import Settings, get_settings
from tests.conftest import MerchantFactory, in_process_api
from tests.support.api_helpers import API, auth
from tests.support.dashboard_client import signed_in
from tests.support.delivery_records import PUBLIC_URL
from tests.support.infrastructure import Infrastructure
from tests.support.lost_keys import secret_sealed_with_a_lost_key
from tests.support.migrations import migrate, scratch_database

NEW_KEY = base64.b64encode(secrets.token_bytes(32)).decode()


async def _stored(sessions: SessionFactory, merchant_id: str) -> tuple[str, str | None]:
    """The two secret columns as the database holds them."""
    async with sessions() as session:
        row = (
            await session.execute(
                text(
                    "SELECT webhook_secret, previous_webhook_secret FROM merchants WHERE id = :id"
                ),
                {"id": merchant_id},
            )
        ).one()
    return row[0], row[1]


async def _read(sessions: SessionFactory, merchant_id: str) -> Merchant:
    async with sessions() as session:
        merchant = await session.get(Merchant, merchant_id, options=[WITH_WEBHOOK_SECRETS])
    assert merchant is not None
    return merchant


async def test_a_new_merchants_secret_is_stored_sealed_and_read_as_itself(
    make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant()

    stored, _ = await _stored(sessions, merchant.merchant_id)

    assert stored.startswith(f"{SEALED_PREFIX}:{keyring().sealing_key_id}:")
    assert merchant.webhook_secret not in stored
    assert merchant.webhook_secret.removeprefix("whsec_") not in stored
    assert (await _read(sessions, merchant.merchant_id)).webhook_secret == merchant.webhook_secret


async def test_a_rotated_secret_and_the_one_it_replaced_are_both_stored_sealed(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant(webhook_url="https://merchant.example/hooks")

    rotated = await api_client.post(f"{API}/webhook-endpoint/rotate-secret", headers=auth(merchant))

    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["data"]["secret"]
    stored = await _stored(sessions, merchant.merchant_id)
    assert all(value and value.startswith(f"{SEALED_PREFIX}:") for value in stored)
    assert new_secret not in str(stored) and merchant.webhook_secret not in str(stored)
    read = await _read(sessions, merchant.merchant_id)
    assert (read.webhook_secret, read.previous_webhook_secret) == (
        new_secret,
        merchant.webhook_secret,
    )


@pytest.fixture
def keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """PAYOUTS_SECRETS_KEYS changed for this test, as a restarted process would read it."""
    yield monkeypatch
    monkeypatch.undo()
    get_settings.cache_clear()
    keyring.cache_clear()


def _use_keys(monkeypatch: pytest.MonkeyPatch, setting: str, settings: Settings) -> None:
    monkeypatch.setenv("PAYOUTS_SECRETS_KEYS", setting)
    monkeypatch.setenv("PAYOUTS_DATABASE_URL", settings.database_url)
    get_settings.cache_clear()
    keyring.cache_clear()


async def _reseal() -> Result:
    """`payouts secrets reseal`, in a thread: it runs an event loop of its own."""
    return await asyncio.to_thread(CliRunner().invoke, payouts, ["secrets", "reseal"])


async def test_reseal_moves_every_secret_to_the_first_key(
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
    keys_from_the_environment: pytest.MonkeyPatch,
) -> None:
    merchant = await make_merchant()
    async with transaction(sessions) as session:  # one stored by an older API: not sealed
        await session.execute(
            text("UPDATE merchants SET previous_webhook_secret = 'whsec_old' WHERE id = :id"),
            {"id": merchant.merchant_id},
        )
    _use_keys(keys_from_the_environment, f"{NEW_KEY},{DEVELOPMENT_SECRETS_KEY}", settings)

    first = await _reseal()
    again = await _reseal()

    assert first.exit_code == 0, first.output
    new_key_id = SecretsKeyring.from_setting(NEW_KEY).sealing_key_id
    assert f"sealed with key {new_key_id}" in first.output
    assert "1 from unsealed" in first.output
    stored = await _stored(sessions, merchant.merchant_id)
    assert all(value and value.startswith(f"{SEALED_PREFIX}:{new_key_id}:") for value in stored)
    assert again.output.startswith(f"0 webhook secrets sealed with key {new_key_id}")
    # The development key can go: the new one alone opens every secret.
    _use_keys(keys_from_the_environment, NEW_KEY, settings)
    read = await _read(sessions, merchant.merchant_id)
    assert (read.webhook_secret, read.previous_webhook_secret) == (
        merchant.webhook_secret,
        "whsec_old",
    )


async def test_reseal_without_the_key_that_sealed_a_secret_says_which_and_exits_1(
    make_merchant: MerchantFactory,
    settings: Settings,
    keys_from_the_environment: pytest.MonkeyPatch,
) -> None:
    await make_merchant()
    _use_keys(keys_from_the_environment, NEW_KEY, settings)

    result = await _reseal()

    assert result.exit_code == 1, result.output
    development = SecretsKeyring.from_setting(DEVELOPMENT_SECRETS_KEY).sealing_key_id
    assert f"sealed with key {development}, which PAYOUTS_SECRETS_KEYS does not hold" in (
        result.output
    )


@pytest.fixture
async def before_sealing(infrastructure: Infrastructure) -> AsyncIterator[str]:
    """A database at 0035 holding a merchant's secrets as they were stored then."""
    async with scratch_database(infrastructure) as url:
        await migrate(url, "up", "0035")
        engine = create_async_engine(url)
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO merchants (id, name, api_key_hash, is_active, webhook_secret,"
                    " previous_webhook_secret, created_at) VALUES ('m-1', 'Old', 'hash', 1,"
                    " 'whsec_current', 'whsec_previous', NOW())"
                )
            )
        await engine.dispose()
        yield url


async def _columns(url: str) -> tuple[str, str]:
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT webhook_secret, previous_webhook_secret FROM merchants")
            )
        ).one()
    await engine.dispose()
    return row[0], row[1]


async def test_the_migration_seals_the_secrets_stored_before_it_and_its_downgrade_opens_them(
    before_sealing: str,
) -> None:
    await migrate(before_sealing, "up", "0036")
    sealed = await _columns(before_sealing)
    assert all(value.startswith(f"{SEALED_PREFIX}:") for value in sealed)
    assert [keyring().open(value) for value in sealed] == ["whsec_current", "whsec_previous"]

    await migrate(before_sealing, "down", "0035")
    assert await _columns(before_sealing) == ("whsec_current", "whsec_previous")


async def test_a_merchant_whose_secret_no_key_opens_still_reaches_the_api(
    api_client: httpx.AsyncClient,
    production_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
) -> None:
    """Every request loaded its merchant's secrets to authenticate it: the merchant's every call
    failed, 500 in production, and in test mode 400 naming an X-Sandbox-Fault header it never
    sent (secrets review). Only its webhooks need them."""
    merchant = await make_merchant()
    async with secret_sealed_with_a_lost_key(
        sessions, merchant.merchant_id, merchant.webhook_secret
    ):
        for client in (api_client, production_client):
            answer = await client.get(f"{API}/balance", headers=auth(merchant, ""))
            assert answer.status_code == 200, answer.text


async def test_a_merchant_whose_secret_no_key_opens_reads_sets_and_rotates_its_endpoint(
    production_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """GET and PUT /webhook-endpoint show and write no secret, and a rotation only moves the
    current one aside, yet all three opened both: each answered 500, and a rotation is the
    merchant's way back to signed webhooks (found by the webhook API review)."""
    merchant = await make_merchant(webhook_url=PUBLIC_URL)
    async with secret_sealed_with_a_lost_key(
        sessions, merchant.merchant_id, merchant.webhook_secret
    ):
        read = await production_client.get(f"{API}/webhook-endpoint", headers=auth(merchant, ""))
        moved = await production_client.put(
            f"{API}/webhook-endpoint",
            json={"url": "https://93.184.215.15/hook"},
            headers=auth(merchant, ""),
        )
        rotated = await production_client.post(
            f"{API}/webhook-endpoint/rotate-secret", headers=auth(merchant)
        )

    assert (read.status_code, read.json()["data"]["url"]) == (200, PUBLIC_URL), read.text
    assert moved.status_code == 200, moved.text
    assert rotated.status_code == 200, rotated.text
    # The lost secret signs nothing: dropped, not kept as the previous one (the dashboard's
    # reveal and timeline open both, and failed for the whole grace period).
    assert rotated.json()["data"]["previousSecretExpiresAt"] is None
    async with sessions() as session:
        previous = await session.scalar(
            select(Merchant.previous_webhook_secret.is_(None)).where(
                Merchant.id == merchant.merchant_id
            )
        )
    assert previous


async def test_a_merchant_whose_secret_no_key_opens_still_uses_the_dashboard(
    settings: Settings, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """The signed-in merchant was loaded with its secrets for every page: only the pages that
    show or sign with them need them."""
    merchant = await make_merchant()
    async with in_process_api(settings) as client:
        await signed_in(client, merchant)
        async with secret_sealed_with_a_lost_key(
            sessions, merchant.merchant_id, merchant.webhook_secret
        ):
            page = await client.get("/dashboard/payouts/new")

    assert page.status_code == 200, page.text
