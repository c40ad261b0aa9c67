"""Merchant-wide faults (PUT /sandbox/faults): stored per merchant, remembered per API process
for a couple of seconds like the merchant of a key (a change through this process at once)."""

from sqlalchemy import delete
from sqlalchemy.dialects.mysql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from api_service.sandbox.faults import FaultShare, parse_fault
from contracts.db.engine import SessionFactory, utcnow
from contracts.db.models import SandboxFaultSetting
from contracts.expiring_map import ExpiringMap


async def load_fault_share(session: AsyncSession, merchant_id: str) -> FaultShare | None:
    row = await session.get(SandboxFaultSetting, merchant_id)
    return None if row is None else FaultShare(parse_fault(row.fault), row.percent)


async def save_fault_share(session: AsyncSession, merchant_id: str, share: FaultShare) -> None:
    values = {"fault": share.fault.label, "percent": share.percent, "updated_at": utcnow()}
    await session.execute(
        insert(SandboxFaultSetting)
        .values(merchant_id=merchant_id, **values)
        .on_duplicate_key_update(**values)
    )


async def clear_fault_share(session: AsyncSession, merchant_id: str) -> None:
    await session.execute(
        delete(SandboxFaultSetting).where(SandboxFaultSetting.merchant_id == merchant_id)
    )


class FaultShares:
    def __init__(self, sessions: SessionFactory, ttl_seconds: float) -> None:
        self.sessions = sessions
        # A 1-tuple holds "no setting" too, so a merchant without one is not looked up each call.
        self._by_merchant: ExpiringMap[str, tuple[FaultShare | None]] = ExpiringMap(ttl_seconds)

    async def of(self, merchant_id: str) -> FaultShare | None:
        known = self._by_merchant.get(merchant_id)
        if known is None:
            async with self.sessions() as session:
                known = (await load_fault_share(session, merchant_id),)
            self._by_merchant.put(merchant_id, known)
        return known[0]

    def forget(self, merchant_id: str) -> None:
        """After a change through this process."""
        self._by_merchant.remove(merchant_id)
