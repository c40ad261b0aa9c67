"""Idempotent POSTs: scope (merchant, key); method + path + body hash; the response stored in
the same transaction as the work it describes; 4xx stored, 5xx not (the client may retry)."""

import hashlib
import json
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any, cast

from fastapi import Depends, Header, Request
from sqlalchemy import ColumnElement, CursorResult, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from api_service.deps import CurrentMerchant, SettingsDep, api_key_header, get_session_factory
from api_service.envelope import error_body, json_response
from api_service.errors import (
    ApiError,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    InvalidIdempotencyKey,
    MissingIdempotencyKey,
)
from api_service.sealed_responses import ResponseSeal
from api_service.usage_limits import limit_idempotency_keys
from contracts.db.engine import DATABASE_NOW, SessionFactory, database_now_plus
from contracts.db.models import IdempotencyKey

Operation = Callable[[], Awaitable[tuple[int, bytes]]]
REPLAYED_HEADER = "Idempotent-Replayed"


def request_fingerprint(body: bytes) -> str:
    """SHA-256 of the canonical JSON body (key order and spacing do not matter)."""
    try:
        canonical = json.dumps(
            json.loads(body, parse_float=Decimal),
            sort_keys=True,
            separators=(",", ":"),
            default=str,
        ).encode()
    except (ValueError, RecursionError):  # not JSON: the endpoint answers 400, stored as sent
        canonical = body
    return hashlib.sha256(canonical).hexdigest()


class ClaimLost(Exception):
    """Another request took this key over (ours was stale): ours must not store or commit."""


@dataclass
class Idempotency:
    key: str
    merchant_id: str
    method: str
    path: str
    request_id: str
    sessions: SessionFactory
    ttl_seconds: int
    stale_after_seconds: int
    keys_per_day: int
    seal: ResponseSeal
    # Whoever holds the token owns the claim: storing and releasing are conditioned on it.
    token: str = field(default_factory=lambda: secrets.token_hex(16))

    async def run(
        self, request: Request, session: AsyncSession, operation: Operation, *, sealed: bool = False
    ) -> Response:
        """Claim the key, run `operation` (which must not commit), store its response, commit.
        `sealed`: the response carries a secret, stored encrypted under the caller's API key."""
        fingerprint = request_fingerprint(await request.body())
        replay = await self._claim(fingerprint)
        if replay is not None:
            return replay
        try:
            status_code, body = await operation()
            stored = self.seal.seal(body) if sealed else body
            await self._store_in(session, status_code, stored)
            await session.commit()
        except ApiError as error:
            await session.rollback()
            if error.status_code >= 500:
                await self._release()
                raise
            body = error_body(error.code, error.message, self.request_id, error.details)
            await self._store_error(error.status_code, body)
            return json_response(body, error.status_code, error.headers)
        except ClaimLost as lost:
            await session.rollback()
            raise IdempotencyKeyInUse from lost
        except BaseException:
            # Also a failed commit: nothing was stored, so the key must not stay claimed.
            await session.rollback()
            await self._release()
            raise
        return json_response(body, status_code)

    def _row(self) -> tuple[ColumnElement[bool], ...]:
        return (IdempotencyKey.merchant_id == self.merchant_id, IdempotencyKey.key == self.key)

    def _owned(self) -> tuple[ColumnElement[bool], ...]:
        return (*self._row(), IdempotencyKey.claim_token == self.token)

    async def _claim(self, fingerprint: str) -> Response | None:
        """None when this request owns the key now; a replayed response when it already ran.
        Every time is the database's clock, so API hosts whose clocks drift agree."""
        async with self.sessions() as session:
            for _ in range(2):
                try:
                    await session.execute(
                        insert(IdempotencyKey).values(
                            merchant_id=self.merchant_id,
                            key=self.key,
                            method=self.method,
                            path=self.path,
                            request_hash=fingerprint,
                            claim_token=self.token,
                            locked_at=DATABASE_NOW,
                            created_at=DATABASE_NOW,
                            expires_at=database_now_plus(self.ttl_seconds),
                        )
                    )
                    # Counted only when a key is stored; over the quota, leaving the block
                    # rolls the key back (the 429 is not stored: the key works tomorrow).
                    await limit_idempotency_keys(session, self.merchant_id, self.keys_per_day)
                    await session.commit()
                    return None
                except IntegrityError:
                    await session.rollback()
                found = (
                    await session.execute(
                        select(
                            IdempotencyKey,
                            (IdempotencyKey.expires_at <= DATABASE_NOW).label("expired"),
                        ).where(*self._row())
                    )
                ).one_or_none()
                if found is None:
                    continue  # deleted in between: claim again
                existing, expired = found
                if expired:
                    await session.execute(
                        delete(IdempotencyKey).where(
                            *self._row(), IdempotencyKey.expires_at <= DATABASE_NOW
                        )
                    )
                    await session.commit()
                    continue
                return await self._resolve_existing(session, existing, fingerprint)
        raise IdempotencyKeyInUse

    async def _resolve_existing(
        self, session: AsyncSession, existing: IdempotencyKey, fingerprint: str
    ) -> Response | None:
        if (existing.method, existing.path, existing.request_hash) != (
            self.method,
            self.path,
            fingerprint,
        ):
            raise IdempotencyKeyReused
        if existing.status_code is not None and existing.response_body is not None:
            return json_response(
                self.seal.unseal(existing.response_body),
                existing.status_code,
                {REPLAYED_HEADER: "true"},
            )
        # The first request died (or is very slow): take the key over, once, if it is stale.
        taken = await session.execute(
            update(IdempotencyKey)
            .where(
                *self._row(),
                IdempotencyKey.claim_token == existing.claim_token,
                IdempotencyKey.status_code.is_(None),
                IdempotencyKey.locked_at <= database_now_plus(-self.stale_after_seconds),
            )
            .values(claim_token=self.token, locked_at=DATABASE_NOW)
        )
        await session.commit()
        if cast(CursorResult[Any], taken).rowcount != 1:
            raise IdempotencyKeyInUse
        return None

    async def _store_in(self, session: AsyncSession, status_code: int, body: bytes) -> None:
        """In the transaction of the work: if the claim was taken over, neither is kept."""
        stored = await session.execute(
            update(IdempotencyKey)
            .where(*self._owned())
            .values(status_code=status_code, response_body=body)
        )
        if cast(CursorResult[Any], stored).rowcount != 1:
            raise ClaimLost(self.key)

    async def _store_error(self, status_code: int, body: bytes) -> None:
        """A 4xx is stored on its own: the work's transaction was rolled back."""
        try:
            async with self.sessions() as session:
                await self._store_in(session, status_code, body)
                await session.commit()
        except ClaimLost as lost:
            raise IdempotencyKeyInUse from lost

    async def _release(self) -> None:
        """Forget our claim so the client can retry; best effort when the database is down."""
        try:
            async with self.sessions() as session:
                await session.execute(
                    delete(IdempotencyKey).where(
                        *self._owned(), IdempotencyKey.status_code.is_(None)
                    )
                )
                await session.commit()
        except Exception:
            pass


async def get_idempotency(
    request: Request,
    merchant: CurrentMerchant,
    api_key: Annotated[str | None, Depends(api_key_header)],
    settings: SettingsDep,
    sessions: Annotated[SessionFactory, Depends(get_session_factory)],
    key: Annotated[
        str | None,
        Header(alias="X-IDEMPOTENCY-KEY", description="A UUID; replays return the first response"),
    ] = None,
) -> Idempotency:
    if not key:
        raise MissingIdempotencyKey
    try:
        normalized = str(uuid.UUID(key))
    except ValueError as exc:
        raise InvalidIdempotencyKey from exc
    return Idempotency(
        key=normalized,
        merchant_id=merchant.id,
        method=request.method,
        path=request.url.path,
        request_id=str(request.state.request_id),
        sessions=sessions,
        ttl_seconds=settings.idempotency_ttl_seconds,
        stale_after_seconds=settings.idempotency_stale_seconds,
        keys_per_day=settings.idempotency_keys_per_merchant_per_day,
        seal=ResponseSeal.for_api_key(api_key or ""),
    )


IdempotencyDep = Annotated[Idempotency, Depends(get_idempotency)]
