"""What a request's turn (api_service/client_turns.py) costs on the hot path: a request of a
merchant whose turn is free takes it at once. Each request started a task to read its messages
ahead (to see its client go away while it waited), even when it had nothing to wait for, and its
API key was hashed and looked up in the merchant cache three times: by the turns, by the fault
middleware and by the endpoint's authentication."""

from typing import Any

import pytest

import api_service.client_turns
from api_service.merchant_cache import MerchantCache
from contracts.db.models import Merchant
from contracts.settings import Settings
from tests.conftest import MerchantFactory, in_process_api
from tests.support.api_helpers import API, auth, create_payout


async def test_a_request_whose_turn_is_free_reads_nothing_ahead(
    settings: Settings, make_merchant: MerchantFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    read_aheads: list[object] = []
    original = api_service.client_turns._ReadAhead

    class CountedReadAhead(original):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            read_aheads.append(self)

    monkeypatch.setattr(api_service.client_turns, "_ReadAhead", CountedReadAhead)
    merchant = await make_merchant()
    async with in_process_api(settings) as client:
        # The first call of a key new to the process looks it up: it may have to wait.
        assert (await client.get(f"{API}/balance", headers=auth(merchant, ""))).is_success
        read_aheads.clear()
        await create_payout(client, merchant)
        balance = await client.get(f"{API}/balance", headers=auth(merchant, ""))

    assert balance.is_success
    assert read_aheads == []


async def test_a_requests_api_key_is_looked_up_once(
    settings: Settings, make_merchant: MerchantFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[str] = []
    original = MerchantCache.get

    def counted(cache: MerchantCache, key_digest: str) -> Merchant | None:
        lookups.append(key_digest)
        return original(cache, key_digest)

    monkeypatch.setattr(MerchantCache, "get", counted)
    merchant = await make_merchant()
    async with in_process_api(settings) as client:
        assert (await client.get(f"{API}/balance", headers=auth(merchant, ""))).is_success
        lookups.clear()
        await create_payout(client, merchant)

    assert len(lookups) == 1
