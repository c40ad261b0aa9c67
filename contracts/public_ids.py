"""The ids a merchant sees of rows numbered by a counter every merchant shares (ledger lines and
journals, request log entries, scheduled actions): the internal id through a keyed permutation,
so that the gap between two of its own ids no longer counts what other merchants did meanwhile
(the tenancy review: A made one payout, B three, A another, and A's journal ids were 3 apart).

A permutation of [1, 2^52) (JSON-safe integers): four Feistel rounds over two 26-bit halves,
each an HMAC-SHA256 of the deployment's key (`deployment_keys`, made by migration 0039), with
0 walked past. A public id maps back to the internal one, which cursors need; a number that is
none of the merchant's rows finds nothing, as before."""

import hashlib
import hmac

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.db.models import DeploymentKey

PUBLIC_IDS_KEY = "public-ids"
_HALF_BITS = 26
_HALF_MASK = (1 << _HALF_BITS) - 1
_ROUNDS = 4
ID_LIMIT = 1 << (2 * _HALF_BITS)  # ids are below 2^52


class PublicIds:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def public(self, internal: int) -> int:
        """The id the merchant sees of row `internal` (1 <= internal < 2^52)."""
        mapped = self._forward(internal)
        while mapped == 0:  # 0 is no id: walk on (the cycle leads back into [1, 2^52))
            mapped = self._forward(mapped)
        return mapped

    def internal(self, public: int) -> int | None:
        """The row a public id names; None for a number that no id maps to."""
        if not 0 < public < ID_LIMIT:
            return None
        mapped = self._backward(public)
        while mapped == 0:
            mapped = self._backward(mapped)
        return mapped

    def _round(self, number: int, half: int) -> int:
        digest = hmac.new(self._key, bytes([number]) + half.to_bytes(4, "big"), hashlib.sha256)
        return int.from_bytes(digest.digest()[:4], "big") & _HALF_MASK

    def _forward(self, value: int) -> int:
        left, right = value >> _HALF_BITS, value & _HALF_MASK
        for number in range(_ROUNDS):
            left, right = right, left ^ self._round(number, right)
        return (left << _HALF_BITS) | right

    def _backward(self, value: int) -> int:
        left, right = value >> _HALF_BITS, value & _HALF_MASK
        for number in reversed(range(_ROUNDS)):
            left, right = right ^ self._round(number, left), left
        return (left << _HALF_BITS) | right


async def load_public_ids(session: AsyncSession) -> PublicIds:
    key = await session.scalar(
        select(DeploymentKey.value).where(DeploymentKey.name == PUBLIC_IDS_KEY)
    )
    if key is None:  # not cached: the next request looks again
        raise LookupError("no public-ids key: migration 0039 makes it (`payouts migrate`)")
    return PublicIds(key)
