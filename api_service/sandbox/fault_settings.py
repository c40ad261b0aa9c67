"""Merchant-wide faults (PUT /sandbox/faults): stored per merchant; each API process keeps every
merchant's setting, read with one query every couple of seconds like the merchant of a key (a
change through this process at once), and reads again the row of a merchant it knows has one
before each of its calls (FaultShares.of). Few merchants set faults: one read of them all costs
less than a read per merchant, however many merchants call."""

import asyncio
import time

from sqlalchemy import delete, select
from sqlalchemy.dialects.mysql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from api_service.sandbox.faults import FaultShare, parse_fault
from contracts.db.engine import SessionFactory, utcnow
from contracts.db.models import SandboxFaultSetting


def _share_of(row: SandboxFaultSetting) -> FaultShare:
    return FaultShare(parse_fault(row.fault), row.percent)


async def load_fault_share(session: AsyncSession, merchant_id: str) -> FaultShare | None:
    row = await session.get(SandboxFaultSetting, merchant_id)
    return None if row is None else _share_of(row)


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


_ALL_SETTINGS = select(SandboxFaultSetting)  # built once: read every few seconds per process


class FaultShares:
    def __init__(self, sessions: SessionFactory, ttl_seconds: float) -> None:
        self.sessions = sessions
        self.ttl_seconds = ttl_seconds
        self._by_merchant: dict[str, FaultShare] = {}
        self._fresh_until = 0.0  # monotonic
        self._reading = asyncio.Lock()

    async def of(self, merchant_id: str) -> FaultShare | None:
        """The merchant's setting. One this process knows of is read again first, so that a
        fault switched off or changed through another API process stops at once: the
        merchant's clean-up call ("DELETE, then carry on"), answered by another process, was
        still faulted for up to `ttl_seconds`. A fault switched on elsewhere reaches this
        process within that time (the merchants with no fault pay no read per call)."""
        if time.monotonic() >= self._fresh_until:
            await self._read_all()
        if merchant_id not in self._by_merchant:
            return None
        async with self.sessions() as session:
            share = await load_fault_share(session, merchant_id)
        if share is None:
            self._by_merchant.pop(merchant_id, None)
        else:
            self._by_merchant[merchant_id] = share
        return share

    def expire(self) -> None:
        """After a change through this process: the next call reads them all again."""
        self._fresh_until = 0.0

    async def _read_all(self) -> None:
        async with self._reading:  # the calls arriving meanwhile wait for this one read
            if time.monotonic() < self._fresh_until:
                return
            async with self.sessions() as session:
                rows = await session.scalars(_ALL_SETTINGS)
                self._by_merchant = {row.merchant_id: _share_of(row) for row in rows}
            self._fresh_until = time.monotonic() + self.ttl_seconds
