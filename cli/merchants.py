"""Operator tasks on merchants (the demo merchant, create, top up)."""

import uuid
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts import ledger
from contracts.api_keys import hash_api_key, new_api_key, new_webhook_secret
from contracts.db.engine import utcnow
from contracts.db.models import Balance, Merchant


@dataclass(frozen=True)
class NewMerchant:
    merchant_id: str
    api_key: str
    webhook_secret: str

    def as_json(self) -> dict[str, str]:
        return {
            "merchantId": self.merchant_id,
            "apiKey": self.api_key,
            "webhookSecret": self.webhook_secret,
        }


async def create_merchant(
    session: AsyncSession, *, name: str, balance: Decimal, webhook_url: str | None
) -> NewMerchant:
    """A merchant, its balance row, and an opening top-up journal when balance > 0."""
    api_key = new_api_key()
    merchant = Merchant(
        id=str(uuid.uuid4()),
        name=name,
        api_key_hash=hash_api_key(api_key),
        is_active=True,
        webhook_url=webhook_url,
        webhook_secret=new_webhook_secret(),
        created_at=utcnow(),
    )
    session.add(merchant)
    await session.flush()  # no ORM relationships: insert the parent first
    session.add(
        Balance(
            merchant_id=merchant.id,
            currency="PKR",
            available=Decimal("0.00"),
            held=Decimal("0.00"),
            version=0,
            updated_at=utcnow(),
        )
    )
    await session.flush()
    if balance > 0:
        await ledger.top_up(session, merchant_id=merchant.id, amount=balance)
    return NewMerchant(merchant.id, api_key, merchant.webhook_secret)


async def merchant_exists(session: AsyncSession, merchant_id: str) -> bool:
    return await session.scalar(select(Merchant.id).where(Merchant.id == merchant_id)) is not None
