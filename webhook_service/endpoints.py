"""Merchants' webhook endpoints (URL and signing secrets), cached in the process for a short
time: a batch of deliveries costs at most one SELECT, for the merchants it does not find here,
instead of one per delivery. An endpoint or secret change reaches deliveries within
`ENDPOINT_CACHE_SECONDS`.
"""

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.db.models import Merchant
from contracts.expiring_map import ExpiringMap
from webhook_service.signing import active_secrets

ENDPOINT_CACHE_SECONDS = 2.0


@dataclass(frozen=True)
class Endpoint:
    url: str | None
    secret: str
    previous_secret: str | None
    previous_secret_expires_at: datetime | None

    def secrets_at(self, now: datetime) -> list[str]:
        return active_secrets(
            self.secret, self.previous_secret, self.previous_secret_expires_at, now
        )


class EndpointCache:
    def __init__(
        self,
        ttl_seconds: float = ENDPOINT_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._by_merchant: ExpiringMap[str, Endpoint] = ExpiringMap(ttl_seconds, clock)

    async def endpoints(
        self, session: AsyncSession, merchant_ids: Iterable[str]
    ) -> dict[str, Endpoint]:
        """The endpoints of these merchants (a merchant that does not exist has none)."""
        known = {
            merchant_id: self._by_merchant.get(merchant_id) for merchant_id in set(merchant_ids)
        }
        missing = {merchant_id for merchant_id, endpoint in known.items() if endpoint is None}
        if missing:
            known.update(await self._load(session, missing))
        return {merchant_id: e for merchant_id, e in known.items() if e is not None}

    async def _load(self, session: AsyncSession, merchant_ids: set[str]) -> dict[str, Endpoint]:
        rows = await session.execute(
            select(
                Merchant.id,
                Merchant.webhook_url,
                Merchant.webhook_secret,
                Merchant.previous_webhook_secret,
                Merchant.previous_secret_expires_at,
            ).where(Merchant.id.in_(sorted(merchant_ids)))
        )
        loaded = {}
        for merchant_id, url, secret, previous, previous_expires_at in rows:
            loaded[merchant_id] = Endpoint(url, secret, previous, previous_expires_at)
            self._by_merchant.put(merchant_id, loaded[merchant_id])
        return loaded
