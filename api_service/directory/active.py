"""The active banks and wallets, read once every few seconds instead of once per payout: the
directory changes only through a migration or an operator's edit, and every create validates
against it. A code the copy does not know is looked up again before it is refused: a refusal is
stored under the merchant's idempotency key for a day, so a code switched on a moment ago must not
earn one. A code switched off is refused within `REFRESH_SECONDS`."""

import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.db.models import DirectoryInstitution
from contracts.domain.accounts import upper_ascii

REFRESH_SECONDS = 10.0
# Built once: a refresh builds no statement (tests/integration/test_statement_budget.py).
_ACTIVE = select(DirectoryInstitution).where(DirectoryInstitution.is_active.is_(True))


@dataclass(frozen=True)
class Institution:
    code: str
    kind: str  # BANK or WALLET
    iban_code: str | None


class ActiveDirectory:
    def __init__(self, refresh_seconds: float = REFRESH_SECONDS) -> None:
        self.refresh_seconds = refresh_seconds
        self._institutions: dict[str, Institution] = {}
        self._loaded_at = float("-inf")

    async def find(self, session: AsyncSession, kind: str, code: str) -> Institution | None:
        """The active institution of that kind with that code (any case), else None."""
        stale = time.monotonic() - self._loaded_at > self.refresh_seconds
        if stale:
            await self._load(session)
        found = self._lookup(kind, code)
        if found is None and not stale:
            await self._load(session)
            found = self._lookup(kind, code)
        return found

    async def _load(self, session: AsyncSession) -> None:
        rows = await session.scalars(_ACTIVE)
        self._institutions = {
            row.code: Institution(row.code, row.kind, row.iban_code) for row in rows
        }
        self._loaded_at = time.monotonic()

    def _lookup(self, kind: str, code: str) -> Institution | None:
        institution = self._institutions.get(upper_ascii(code))
        return institution if institution is not None and institution.kind == kind else None


ACTIVE_DIRECTORY = ActiveDirectory()
