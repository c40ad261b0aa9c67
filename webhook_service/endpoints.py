"""Merchants' webhook endpoints (URL and signing secrets), cached in the process for a short
time: a batch of deliveries costs at most one SELECT, for the merchants it does not find here,
instead of one per delivery. An endpoint or secret change reaches deliveries within
`ENDPOINT_CACHE_SECONDS`.
"""

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.db.models import Merchant
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


@dataclass(frozen=True)
class _Cached:
    endpoint: Endpoint
    loaded_at: float


class EndpointCache:
    def __init__(
        self,
        ttl_seconds: float = ENDPOINT_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        # Oldest load first: every entry lives equally long, so the expired ones are at the front.
        self._entries: OrderedDict[str, _Cached] = OrderedDict()

    async def endpoints(
        self, session: AsyncSession, merchant_ids: Iterable[str]
    ) -> dict[str, Endpoint]:
        """The endpoints of these merchants (a merchant that does not exist has none)."""
        self._forget_expired()
        wanted = set(merchant_ids)
        missing = wanted - self._entries.keys()
        if missing:
            await self._load(session, missing)
        return {
            merchant_id: self._entries[merchant_id].endpoint
            for merchant_id in wanted
            if merchant_id in self._entries
        }

    def _forget_expired(self) -> None:
        oldest_kept = self.clock() - self.ttl_seconds
        while self._entries and next(iter(self._entries.values())).loaded_at <= oldest_kept:
            self._entries.popitem(last=False)

    async def _load(self, session: AsyncSession, merchant_ids: set[str]) -> None:
        rows = await session.execute(
            select(
                Merchant.id,
                Merchant.webhook_url,
                Merchant.webhook_secret,
                Merchant.previous_webhook_secret,
                Merchant.previous_secret_expires_at,
            ).where(Merchant.id.in_(sorted(merchant_ids)))
        )
        loaded_at = self.clock()
        for merchant_id, url, secret, previous, previous_expires_at in rows:
            self._entries[merchant_id] = _Cached(
                Endpoint(url, secret, previous, previous_expires_at), loaded_at
            )
