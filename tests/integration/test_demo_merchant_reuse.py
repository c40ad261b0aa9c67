"""`make run` (`payouts up`) reuses the demo merchant of earlier runs, as the database has it now:
a webhook secret rotated since is read again, and a merchant whose key was replaced, or that
was deactivated, is not reused (the banner would print a dead key and a curl that gets 401)."""

from datetime import timedelta

from sqlalchemy import update

from api_service.webhooks.service import rotate_secret
from cli.merchants import NewMerchant
from cli.up import _demo_merchant
from contracts.api_keys import hash_api_key, new_api_key
from contracts.db.engine import SessionFactory, transaction
from contracts.db.models import WITH_WEBHOOK_SECRETS, Merchant
from contracts.settings import Settings

SINK = "http://127.0.0.1:9000/webhooks"


async def stored(sessions: SessionFactory, merchant_id: str) -> Merchant:
    async with sessions() as session:
        return await session.get_one(
            Merchant, merchant_id, populate_existing=True, options=[WITH_WEBHOOK_SECRETS]
        )


async def test_a_rotated_webhook_secret_is_read_again(
    settings: Settings, sessions: SessionFactory
) -> None:
    saved = await _demo_merchant(settings, None, SINK)
    async with transaction(sessions) as session:
        merchant = await session.get_one(Merchant, saved.merchant_id)
        await rotate_secret(session, merchant, grace=timedelta(0))

    again = await _demo_merchant(settings, saved, SINK)

    assert again.merchant_id == saved.merchant_id
    assert again.webhook_secret == (await stored(sessions, saved.merchant_id)).webhook_secret
    assert again.webhook_secret != saved.webhook_secret


async def test_a_merchant_whose_key_was_replaced_is_not_reused(
    settings: Settings, sessions: SessionFactory
) -> None:
    saved = await _demo_merchant(settings, None, SINK)
    async with transaction(sessions) as session:  # what `payouts seed --api-key` does to it
        await session.execute(
            update(Merchant)
            .where(Merchant.id == saved.merchant_id)
            .values(api_key_hash=hash_api_key(new_api_key()))
        )

    again: NewMerchant = await _demo_merchant(settings, saved, SINK)

    assert again.merchant_id != saved.merchant_id
    assert (await stored(sessions, again.merchant_id)).api_key_hash == hash_api_key(again.api_key)


async def test_a_deactivated_merchant_is_not_reused(
    settings: Settings, sessions: SessionFactory
) -> None:
    """Its key gets 401: the banner printed it, and a curl that gets 401 (found by the API keys
    review)."""
    saved = await _demo_merchant(settings, None, SINK)
    async with transaction(sessions) as session:
        await session.execute(
            update(Merchant).where(Merchant.id == saved.merchant_id).values(is_active=False)
        )

    again = await _demo_merchant(settings, saved, SINK)

    assert again.merchant_id != saved.merchant_id
    assert (await stored(sessions, again.merchant_id)).is_active


async def test_a_merchant_replaced_no_longer_sends_its_webhooks_to_the_sink(
    settings: Settings, sessions: SessionFactory
) -> None:
    """The sink checks signatures with the new merchant's secret alone: the replaced merchant's
    webhooks were each refused there, and retried for a day (found by the newcomer review)."""
    saved = await _demo_merchant(settings, None, SINK)
    async with transaction(sessions) as session:
        await session.execute(
            update(Merchant).where(Merchant.id == saved.merchant_id).values(is_active=False)
        )

    again = await _demo_merchant(settings, saved, SINK)

    assert (await stored(sessions, saved.merchant_id)).webhook_url is None
    assert (await stored(sessions, again.merchant_id)).webhook_url == SINK
