"""Merchants by API-key digest, remembered for a couple of seconds per API process.

Every request starts with the merchant of its key: remembering it saves the hot path a round
trip. The price is a short delay: a deactivated key, or an endpoint or secret changed by another
API process, takes effect within `ttl_seconds` (a change made through this process at once).
Unknown keys are never remembered: they always cost the one lookup, so answer times say nothing
about which keys exist."""

import time
from dataclasses import dataclass, field

from contracts.db.models import Merchant


@dataclass
class MerchantCache:
    ttl_seconds: float
    _entries: dict[str, tuple[float, Merchant]] = field(default_factory=dict)

    def get(self, key_digest: str) -> Merchant | None:
        entry = self._entries.get(key_digest)
        if entry is None:
            return None
        expires, merchant = entry
        if expires < time.monotonic():
            del self._entries[key_digest]
            return None
        return merchant

    def remember(self, key_digest: str, merchant: Merchant) -> None:
        """`merchant` must be detached from its session (it outlives the request)."""
        if self.ttl_seconds > 0:
            self._entries[key_digest] = (time.monotonic() + self.ttl_seconds, merchant)

    def forget(self, merchant_id: str) -> None:
        """After a change to the merchant through this process."""
        stale = [digest for digest, (_, m) in self._entries.items() if m.id == merchant_id]
        for digest in stale:
            del self._entries[digest]
