"""Shorthand dependency types: the session, the authenticated merchant, settings."""

import logging
from collections.abc import AsyncIterator
from typing import Annotated, NoReturn

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader
from sqlalchemy import bindparam, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import State
from starlette.types import Scope

from api_service.errors import ApiError, InvalidApiKey, MissingApiKey, SandboxDisabled
from api_service.merchant_cache import MerchantCache
from api_service.metrics import FAILED_AUTHENTICATIONS, RefusalReason
from api_service.query_parameters import refuse_unexpected_query
from api_service.usage_limits import limit_request_rate
from contracts.api_keys import hash_api_key
from contracts.db.engine import SessionFactory
from contracts.db.models import Merchant
from contracts.db.outages import refuses_writes
from contracts.logging import LogThrottle, bind_log_context
from contracts.public_ids import PublicIds, load_public_ids
from contracts.settings import Settings

log = logging.getLogger("api.auth")


async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_session_factory(request: Request) -> SessionFactory:
    sessions: SessionFactory = request.app.state.sessions
    return sessions


async def get_session(
    sessions: Annotated[SessionFactory, Depends(get_session_factory)],
) -> AsyncIterator[AsyncSession]:
    """One session per request. Writes commit before the answer: in `Idempotency.run` for
    idempotent POSTs, in the endpoint for the other writes (IPN, PUT)."""
    async with sessions() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def require_sandbox(settings: SettingsDep) -> None:
    """The sandbox controls answer 404 in production, before anything else is judged."""
    if not settings.sandbox_enabled:
        raise SandboxDisabled


# For the routers of the sandbox controls: `APIRouter(..., dependencies=SANDBOX_ONLY)`.
SANDBOX_ONLY = [Depends(require_sandbox)]


API_KEY_HEADER = "X-API-KEY"
api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)
_GIVEN_TWICE = f"{API_KEY_HEADER} is given more than once"


def header_is_repeated(request: Request, name: str) -> bool:
    """A credential header given twice (a proxy adding its own, a client library merging
    headers): the server would take the first, the client may have meant the other."""
    return len(request.headers.getlist(name)) > 1


def reject_credentials(
    reason: RefusalReason, error: ApiError | type[ApiError], refused: str
) -> NoReturn:
    """Counted by `reason` and logged (`refused` says what), then `error`: an API key, a PSP
    callback's signature. The request id comes from the log context; the credential itself is
    never logged."""
    count_refused_credentials(reason, refused)
    raise error


_REFUSALS_LOGGED = LogThrottle(seconds=1.0)
_UNCOUNTED_LOGGED = LogThrottle(seconds=60.0)


def count_refused_credentials(reason: RefusalReason, refused: str) -> None:
    """Every refusal counted by `reason`; a warning for at most one a second of each reason,
    saying how many it stands for (the first line of a flood names its request)."""
    FAILED_AUTHENTICATIONS.labels(reason).inc()
    left_out = _REFUSALS_LOGGED.admit(reason)
    if left_out is None:
        return
    more = f" ({left_out} more refused since the last line)" if left_out else ""
    log.warning("authentication failed: %s%s", refused, more)


async def get_current_merchant(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    api_key: Annotated[str | None, Depends(api_key_header)],
) -> AsyncIterator[Merchant]:
    """The merchant of the API key, within its request rate; its id is on every log line of the
    rest of the request."""
    if not api_key:
        reject_credentials("missing", MissingApiKey, "missing API key")
    if header_is_repeated(request, API_KEY_HEADER):  # which one is meant is anybody's guess
        reject_credentials("invalid", InvalidApiKey(_GIVEN_TWICE), "API key given more than once")
    merchant: Merchant | None = getattr(request.state, KEY_MERCHANT, None)
    if merchant is None:
        merchants: MerchantCache = request.app.state.merchants
        digest = hash_api_key(api_key)
        merchant = merchants.get(digest)
        if merchant is None:
            merchant = await merchant_of_digest(session, digest)
            merchants.remember(digest, merchant)
            await before_the_body(session)
    request.state.merchant_id = merchant.id  # the request log's owner (api_service/request_log)
    with bind_log_context(merchant_id=merchant.id):
        # Counted before anything is judged: a call refused for its query (an unknown or
        # repeated parameter) went uncounted, so such calls were never limited. (A call with a
        # sandbox fault was counted by the fault's middleware already.)
        if not getattr(request.state, RATE_COUNTED, False):
            await within_request_rate(session, settings, merchant.id)
        refuse_unexpected_query(request)
        # Otherwise the request's transaction goes on from here (a create: one transaction).
        yield merchant


async def before_the_body(session: AsyncSession) -> None:
    """Ends the transaction of a request's look-ups (its API key, its dashboard session) before
    its body is read: the connection went back to the pool only after the body had arrived, its
    transaction open meanwhile, and a few clients sending their bodies slowly had them all."""
    await session.commit()


async def within_request_rate(session: AsyncSession, settings: Settings, merchant_id: str) -> None:
    """RateLimited over the merchant's requests per second, where a limit is set (production's
    default): the API's calls and the dashboard's pages and actions alike."""
    per_second = settings.effective_rate_limit_per_second
    if per_second is None:
        return
    try:
        await limit_request_rate(session, merchant_id, per_second)
        await session.commit()  # the counter row is hot: release it at once
    except DBAPIError as refused:
        if not refuses_writes(refused):
            raise
        # Uncounted: a server that takes no writes (a replica, a demoted primary, out of space)
        # may still serve the call's reads; counted, every page and read was a 503 (dashboard
        # outages review). A call that writes meets the refusal itself. Said, at most once a
        # minute: the limit is off meanwhile (fourth fixes review).
        await session.rollback()
        if _UNCOUNTED_LOGGED.admit("uncounted") is not None:
            log.warning(
                "requests per second not counted: the database takes no writes (%r)", refused
            )


async def merchant_of_digest(session: AsyncSession, key_digest: str) -> Merchant:
    # Unknown, inactive and malformed keys take the same path (one indexed lookup of the digest,
    # no shortcut on the key's shape, one rollback): the answer time tells nothing about a key.
    merchant = await active_merchant(session, key_digest)
    if merchant is None:
        await session.rollback()
        reject_credentials("invalid", InvalidApiKey, "invalid API key")
    return merchant


_MERCHANT_OF_DIGEST = select(Merchant).where(Merchant.api_key_hash == bindparam("digest"))


async def active_merchant(session: AsyncSession, key_digest: str) -> Merchant | None:
    """The active merchant of the key digest, detached: it is remembered beyond this session,
    and a rollback later in the request (a replayed key, a retried deadlock) must not expire it
    into a lazy load."""
    merchant = await session.scalar(_MERCHANT_OF_DIGEST, {"digest": key_digest})
    if merchant is None or not merchant.is_active:
        return None
    session.expunge(merchant)
    return merchant


# On scope["state"]: the merchant of the request's one API key, None for a key no merchant has;
# absent until looked up (client_turns, before the request takes its turn). The middlewares
# inside and the endpoint's authentication take it from there: the key was hashed, and looked up
# in the cache, three times per request.
KEY_MERCHANT = "key_merchant"
RATE_COUNTED = "rate_counted"  # on the request's state: counted in its requests per second


async def count_in_request_rate(scope: Scope, merchant_id: str) -> None:
    """For a middleware that answers before the endpoint (a sandbox fault): the call counted
    in its merchant's requests per second, once (RATE_COUNTED); RateLimited over it."""
    state = scope["app"].state
    sessions: SessionFactory = state.sessions
    async with sessions() as session:
        await within_request_rate(session, state.settings, merchant_id)
    scope["state"][RATE_COUNTED] = True


async def merchant_of_key(state: State, key_digest: str) -> Merchant | None:
    """For a middleware, before the request's own session exists: the merchant of the key's
    digest (from the cache, or one lookup), None when the key is unknown; the endpoint's
    dependency decides what to answer."""
    merchants: MerchantCache = state.merchants
    merchant = merchants.get(key_digest)
    if merchant is None:
        sessions: SessionFactory = state.sessions
        async with sessions() as session:
            merchant = await active_merchant(session, key_digest)
        if merchant is not None:
            merchants.remember(key_digest, merchant)
    return merchant


CurrentMerchant = Annotated[Merchant, Depends(get_current_merchant)]


async def get_request_id(request: Request) -> str:
    return str(request.state.request_id)


RequestId = Annotated[str, Depends(get_request_id)]


async def get_public_ids(request: Request, session: SessionDep) -> PublicIds:
    """The deployment's public ids, loaded by the first request that needs them (the key never
    changes; an API started before `payouts migrate` has none yet)."""
    public_ids: PublicIds | None = getattr(request.app.state, "public_ids", None)
    if public_ids is None:
        public_ids = request.app.state.public_ids = await load_public_ids(session)
    return public_ids


PublicIdsDep = Annotated[PublicIds, Depends(get_public_ids)]
