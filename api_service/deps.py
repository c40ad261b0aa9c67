"""Shorthand dependency types: the session, the authenticated merchant, settings."""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api_service.errors import InvalidApiKey, MissingApiKey
from contracts.api_keys import hash_api_key
from contracts.db.engine import SessionFactory
from contracts.db.models import Merchant
from contracts.settings import Settings


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session_factory(request: Request) -> SessionFactory:
    sessions: SessionFactory = request.app.state.sessions
    return sessions


async def get_session(
    sessions: Annotated[SessionFactory, Depends(get_session_factory)],
) -> AsyncIterator[AsyncSession]:
    """One session per request; endpoints commit explicitly before answering."""
    async with sessions() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]


api_key_header = APIKeyHeader(name="X-API-KEY", auto_error=False)


async def get_current_merchant(
    session: SessionDep, api_key: Annotated[str | None, Depends(api_key_header)]
) -> Merchant:
    if not api_key:
        raise MissingApiKey
    # Known and unknown keys cost the same: one indexed lookup of a digest.
    merchant = await session.scalar(
        select(Merchant).where(Merchant.api_key_hash == hash_api_key(api_key))
    )
    if merchant is None or not merchant.is_active:
        raise InvalidApiKey
    await session.commit()  # end the read transaction; the endpoint starts its own
    return merchant


CurrentMerchant = Annotated[Merchant, Depends(get_current_merchant)]


def get_request_id(request: Request) -> str:
    return str(request.state.request_id)


RequestId = Annotated[str, Depends(get_request_id)]
