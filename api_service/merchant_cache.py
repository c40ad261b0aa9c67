"""Merchants by API-key digest, remembered for a couple of seconds per API process.

Every request starts with the merchant of its key: remembering it saves the hot path a round
trip. The price is a short delay: a deactivated key, or an endpoint or secret changed by another
API process, takes effect within `ttl_seconds` (a change made through this process at once).
Unknown keys are never remembered: they always cost the one lookup, so answer times say nothing
about which keys exist."""

from contracts.db.models import Merchant
from contracts.expiring_map import ExpiringMap


class MerchantCache:
    def __init__(self, ttl_seconds: float) -> None:
        self._by_key_digest: ExpiringMap[str, Merchant] = ExpiringMap(ttl_seconds)

    def get(self, key_digest: str) -> Merchant | None:
        return self._by_key_digest.get(key_digest)

    def remember(self, key_digest: str, merchant: Merchant) -> None:
        """`merchant` must be detached from its session (it outlives the request)."""
        self._by_key_digest.put(key_digest, merchant)

    def forget(self, merchant_id: str) -> None:
        """After a change to the merchant through this process."""
        self._by_key_digest.discard(lambda merchant: merchant.id == merchant_id)
