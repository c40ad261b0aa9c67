"""`payouts seed` runs on every `docker compose up`: it must reuse the demo merchant, not add one
more each time, and take the credentials compose gives it."""

import base64
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from cli.merchants import DemoMerchant, check_demo_credentials, ensure_demo_merchant
from contracts.api_keys import hash_api_key, new_api_key, new_webhook_secret
from contracts.db.engine import SessionFactory, transaction
from contracts.db.models import WITH_WEBHOOK_SECRETS, Balance, Merchant


async def _seed(
    sessions: SessionFactory,
    name: str,
    *,
    webhook_url: str | None = None,
    api_key: str | None = None,
    webhook_secret: str | None = None,
) -> DemoMerchant:
    async with transaction(sessions) as session:
        return await ensure_demo_merchant(
            session,
            balance=Decimal("500.00"),
            webhook_url=webhook_url,
            api_key=api_key,
            webhook_secret=webhook_secret,
            name=name,
        )


async def _merchants(sessions: SessionFactory, name: str) -> list[Merchant]:
    async with transaction(sessions) as session:
        return list(
            await session.scalars(
                select(Merchant).options(WITH_WEBHOOK_SECRETS).where(Merchant.name == name)
            )
        )


async def test_a_second_seed_reuses_the_merchant_and_its_balance(sessions: SessionFactory) -> None:
    name = f"Demo {uuid.uuid4()}"
    first = await _seed(sessions, name, webhook_url="http://sink:9000/a")
    again = await _seed(sessions, name, webhook_url="http://sink:9000/b")

    assert first.created and first.new_api_key
    assert not again.created and again.new_api_key is None  # a stored digest cannot be shown
    assert again.merchant_id == first.merchant_id
    [merchant] = await _merchants(sessions, name)
    assert merchant.api_key_hash == hash_api_key(first.new_api_key)  # the first key still works
    assert merchant.webhook_url == "http://sink:9000/b"
    async with transaction(sessions) as session:
        available = await session.scalar(
            select(func.sum(Balance.available)).where(Balance.merchant_id == first.merchant_id)
        )
    assert available == Decimal("500.00")  # topped up once


async def test_given_credentials_are_the_merchants_new_or_existing(
    sessions: SessionFactory,
) -> None:
    name = f"Demo {uuid.uuid4()}"
    key, secret = new_api_key(), new_webhook_secret()
    created = await _seed(sessions, name, api_key=key, webhook_secret=secret)
    assert created.created and created.new_api_key is None  # the caller knows it already

    other_key, other_secret = new_api_key(), new_webhook_secret()
    await _seed(sessions, name, api_key=other_key, webhook_secret=other_secret)

    [merchant] = await _merchants(sessions, name)
    assert merchant.api_key_hash == hash_api_key(other_key)
    assert merchant.webhook_secret == other_secret
    # When it was replaced (no previous secret kept): the dashboard shows no attempt signed
    # before as the new secret signs it.
    assert merchant.previous_webhook_secret is None and merchant.secret_rotated_at is not None


@pytest.mark.parametrize(
    ("api_key", "webhook_secret"),
    [
        ("mpk_test_short", None),
        ("sk_live_" + "a" * 43, None),
        (None, "whsec_not base64!"),
        # 166 characters: sealed, longer than the column (secrets review)
        (None, "whsec_" + base64.b64encode(b"s" * 120).decode()),
    ],
)
def test_malformed_credentials_are_refused(api_key: str | None, webhook_secret: str | None) -> None:
    with pytest.raises(ValueError):
        check_demo_credentials(api_key, webhook_secret)
