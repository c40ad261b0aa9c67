"""Merchants' webhook endpoints (URL, signing secrets and, in test mode, the sandbox webhook
chaos), cached in the process for a short time: a batch of deliveries costs at most one SELECT,
for the merchants it does not find here, instead of one per delivery. An endpoint, secret or
chaos change reaches first attempts within `ENDPOINT_CACHE_SECONDS`, and every retry at once: a
retry reads its merchant's endpoint again (a failure may be the receiver refusing a secret just
retired, and a clock advance can run a whole retry ladder within the cache time). A merchant
without a URL is not remembered: its delivery is parked at once, with no retry that would find
a URL set later, so a URL set in the meantime (then a resend, or a new payout) must be seen at
once.

The chaos setting is read with the endpoint (LEFT OUTER JOIN, one row per merchant at most): it
costs no statement of its own. In production (`with_chaos` off) it is not read at all.
"""

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeGuard

from sqlalchemy import String, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.db.models import Merchant, WebhookChaosSetting
from contracts.db.sealed import keyring
from contracts.expiring_map import ExpiringMap
from contracts.secrets_at_rest import SecretsKeyError
from contracts.webhook_chaos import CHAOS_FIELDS, WebhookChaos, chaos_of
from contracts.webhook_signing import active_secrets
from contracts.webhooks import ENDPOINT_CACHE_SECONDS

log = logging.getLogger("webhooks")

NO_CHAOS = WebhookChaos()

# The secrets as stored (sealed), opened row by row: one secret that no key opens failed the
# whole batch's statement, and every other merchant's webhooks in it (secrets review).
_ENDPOINT_COLUMNS = (
    Merchant.id,
    Merchant.webhook_url,
    type_coerce(Merchant.webhook_secret, String),
    type_coerce(Merchant.previous_webhook_secret, String),
    Merchant.previous_secret_expires_at,
)
_CHAOS_COLUMNS = tuple(getattr(WebhookChaosSetting, name) for name in CHAOS_FIELDS)


@dataclass(frozen=True)
class Endpoint:
    url: str | None
    secret: str = field(repr=False)  # never in a log line or a traceback's locals
    previous_secret: str | None = field(repr=False)
    previous_secret_expires_at: datetime | None
    chaos: WebhookChaos = NO_CHAOS
    # Why the secrets could not be read (a key this process does not hold): no call is made.
    unopened: str | None = None

    def secrets_at(self, now: datetime) -> list[str]:
        return active_secrets(
            self.secret, self.previous_secret, self.previous_secret_expires_at, now
        )

    def retired_secret(self, now: datetime) -> str | None:
        """The previous secret once its grace period is over (it no longer signs)."""
        if self.previous_secret in self.secrets_at(now):
            return None
        return self.previous_secret


def can_be_called(endpoint: Endpoint | None) -> TypeGuard[Endpoint]:
    """An endpoint a webhook can be sent to: it has a URL and its secrets were opened."""
    return endpoint is not None and bool(endpoint.url) and endpoint.unopened is None


class EndpointCache:
    def __init__(
        self,
        ttl_seconds: float = ENDPOINT_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        *,
        with_chaos: bool = False,
    ) -> None:
        self._by_merchant: ExpiringMap[str, Endpoint] = ExpiringMap(ttl_seconds, clock)
        self.with_chaos = with_chaos

    async def endpoints(
        self, session: AsyncSession, merchant_ids: Iterable[str], *, afresh: Iterable[str] = ()
    ) -> dict[str, Endpoint]:
        """The endpoints of these merchants (a merchant that does not exist has none); those of
        the merchants `afresh` are read from the database whatever the cache holds."""
        read_again = set(afresh)
        known = {
            merchant_id: None if merchant_id in read_again else self._by_merchant.get(merchant_id)
            for merchant_id in set(merchant_ids)
        }
        missing = {merchant_id for merchant_id, endpoint in known.items() if endpoint is None}
        if missing:
            known.update(await self._load(session, missing))
        return {merchant_id: e for merchant_id, e in known.items() if e is not None}

    async def _load(self, session: AsyncSession, merchant_ids: set[str]) -> dict[str, Endpoint]:
        columns = [*_ENDPOINT_COLUMNS, *(_CHAOS_COLUMNS if self.with_chaos else ())]
        query = select(*columns).where(Merchant.id.in_(sorted(merchant_ids)))
        if self.with_chaos:
            query = query.outerjoin(
                WebhookChaosSetting, WebhookChaosSetting.merchant_id == Merchant.id
            )
        loaded = {}
        for row in await session.execute(query):
            merchant_id, url, secret, previous, previous_expires_at, *chaos = row
            try:
                current = keyring().open(secret)
            except SecretsKeyError as unopened:
                log.warning("webhook secrets of merchant %s not read: %s", merchant_id, unopened)
                loaded[merchant_id] = Endpoint(url, "", None, None, unopened=str(unopened))
                continue  # not remembered: the key put back is seen at once
            previous = _previous_opened(merchant_id, previous)
            endpoint = Endpoint(url, current, previous, previous_expires_at, _chaos_of(chaos))
            loaded[merchant_id] = endpoint
            if url:  # see the module's docstring: no URL, not remembered
                self._by_merchant.put(merchant_id, endpoint)
        return loaded


def _previous_opened(merchant_id: str, sealed: str | None) -> str | None:
    """The previous secret, or none when no key opens it: it only signs beside the current one,
    which then signs alone (a merchant rotated away from a secret sealed with a lost key, its
    way back to signed webhooks)."""
    if sealed is None:
        return None
    try:
        return keyring().open(sealed)
    except SecretsKeyError as unopened:
        log.warning("previous webhook secret of merchant %s not read: %s", merchant_id, unopened)
        return None


def _chaos_of(columns: list[Any]) -> WebhookChaos:
    """The chaos columns of a row, in `_CHAOS_COLUMNS` order: none (no setting, or not read)
    means no chaos."""
    if not columns or columns[0] is None:
        return NO_CHAOS
    return chaos_of(columns)
