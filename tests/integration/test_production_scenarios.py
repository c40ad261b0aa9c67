"""With PAYOUTS_ENV=production the scripted suffixes 0006-0009 are test mode only (CONTRACT.md):
such an account is "anything else", a payout that succeeds with nothing scheduled."""

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import func, select

from contracts.db.engine import SessionFactory
from contracts.db.models import ScheduledAction
from contracts.settings import Settings
from tests.conftest import MerchantFactory, in_production
from tests.integration.test_sandbox_clock import OPENING, create, reaches
from tests.support.processing import running_processor_and_relay


@pytest.fixture(scope="module")
async def production_processor(settings: Settings) -> AsyncIterator[None]:
    """A processor and an outbox relay in production mode."""
    async with running_processor_and_relay(in_production(settings)):
        yield


@pytest.mark.usefixtures("production_processor")
@pytest.mark.parametrize("suffix", ["0006", "0007", "0008", "0009"])
async def test_a_scripted_suffix_is_an_ordinary_payout_in_production(
    production_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    suffix: str,
) -> None:
    merchant = await make_merchant(balance=OPENING)

    payout_id = await create(production_client, merchant, suffix)

    await reaches(production_client, merchant, payout_id, "SUCCESS")
    async with sessions() as session:
        scheduled = await session.scalar(
            select(func.count())
            .select_from(ScheduledAction)
            .where(ScheduledAction.payout_id == payout_id)
        )
    assert scheduled == 0  # 0006 was reversed 48 h later
