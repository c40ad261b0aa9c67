"""A merchant's webhook secret sealed with a key no process holds (an operator dropped a key
still in use), put back as it was afterwards: a later `payouts secrets reseal` in the same
database would stop on it."""

import base64
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text

from contracts.db.engine import SessionFactory, transaction
from contracts.db.sealed import keyring
from contracts.secrets_at_rest import SecretsKeyring

_SET_SECRET = text("UPDATE merchants SET webhook_secret = :stored WHERE id = :id")


@asynccontextmanager
async def secret_sealed_with_a_lost_key(
    sessions: SessionFactory, merchant_id: str, secret: str
) -> AsyncIterator[str]:
    """Yields the lost key's id."""
    lost = SecretsKeyring.from_setting(base64.b64encode(secrets.token_bytes(32)).decode())
    async with transaction(sessions) as session:
        await session.execute(_SET_SECRET, {"stored": lost.seal(secret), "id": merchant_id})
    try:
        yield lost.sealing_key_id
    finally:
        async with transaction(sessions) as session:
            await session.execute(
                _SET_SECRET, {"stored": keyring().seal(secret), "id": merchant_id}
            )
