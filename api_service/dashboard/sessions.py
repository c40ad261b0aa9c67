"""Dashboard sessions and CSRF, in one place.

Signing in (a merchant with its sandbox API key, an operator with PAYOUTS_OPERATOR_TOKEN) opens a
server-side session: a row keyed by the SHA-256 digest of a random token, with its kind, its
merchant and its expiry. The browser holds the token in a cookie signed with
`dashboard_session_secret` (HMAC-SHA256): HttpOnly, SameSite=Strict, Path=/dashboard, Secure
when the request came over https, expiring with the row. A cookie whose signature does not match
is ignored without asking the database; signing out deletes the row, so the cookie stops working
even where it was copied, and so does replacing the merchant's API key (the demo seed given a new
one ends every session opened with the old one). The table never holds a usable cookie, only
digests.

CSRF: every form carries a token derived from the session's token (an HMAC, never stored); a
POST without it, with another one, or with an Origin naming another site is refused (403). The
sign-in forms, before any session exists, bind their token to a random nonce kept in a cookie of
their own (a signed double submit).

The API key is only hashed, to find its merchant: never stored, logged, put in a URL or rendered.
"""

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Annotated
from urllib.parse import urlencode

from fastapi import Depends, Request
from sqlalchemy import Column, ColumnElement, MetaData, String, Table, delete, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.responses import Response

from api_service.deps import SessionDep, SettingsDep, before_the_body, within_request_rate
from contracts.db.engine import utcnow
from contracts.db.models import Merchant, Timestamp, Uuid
from contracts.expiring_map import ExpiringMap
from contracts.settings import Settings

COOKIE_PATH = "/dashboard"
MERCHANT_COOKIE = "payouts_dashboard"
OPERATOR_COOKIE = "payouts_operator"
SIGN_IN_COOKIE = "payouts_sign_in"
SIGN_IN_NONCE_SECONDS = 3600
CSRF_FIELD = "csrf_token"
MERCHANT_SIGN_IN = "/dashboard/sign-in"
OPERATOR_SIGN_IN = "/dashboard/operations/sign-in"


class SessionKind(StrEnum):
    MERCHANT = "merchant"
    OPERATOR = "operator"


_COOKIE_OF = {SessionKind.MERCHANT: MERCHANT_COOKIE, SessionKind.OPERATOR: OPERATOR_COOKIE}

# Migration 0012. Core, in a metadata of its own: the dashboard's table is no shared contract.
dashboard_sessions = Table(
    "dashboard_sessions",
    MetaData(),
    Column("id", String(64), primary_key=True),  # SHA-256 hex of the cookie's token
    Column("kind", String(10), nullable=False),
    Column("merchant_id", Uuid, nullable=True),  # None for an operator
    Column("created_at", Timestamp, nullable=False),
    Column("expires_at", Timestamp, nullable=False),
)


# The sign-in form's field (and query parameter) naming the page to go on to once signed in.
NEXT_FIELD = "next"


class SignInRequired(Exception):
    """No valid session of the kind the page needs: the browser goes to `sign_in_path`."""

    def __init__(self, sign_in_path: str) -> None:
        super().__init__(sign_in_path)
        self.sign_in_path = sign_in_path

    def redirect_for(self, request: Request) -> str:
        """Where the browser goes: the sign-in page, told which page was asked for (a page
        opened from a link: signed in, the merchant landed on the home page instead). Not a
        form's target: what it sent is not sent again."""
        if request.method != "GET":
            return self.sign_in_path
        wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return f"{self.sign_in_path}?{urlencode({NEXT_FIELD: wanted})}"


class CsrfRefused(Exception):
    """A form post without this session's CSRF token (or from another origin)."""


@dataclass(frozen=True)
class Signer:
    """HMAC-SHA256 under the dashboard secret, one purpose per kind of value."""

    secret: bytes

    @classmethod
    def of(cls, settings: Settings) -> "Signer":
        return cls(settings.dashboard_session_secret.encode())

    def mac(self, purpose: str, value: str) -> str:
        digest = hmac.new(self.secret, f"{purpose}:{value}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(self, purpose: str, value: str) -> str:
        return f"{value}.{self.mac(purpose, value)}"

    def verified(self, purpose: str, signed: str | None) -> str | None:
        """The value of a signed string whose signature matches, else None."""
        value, dot, mac = (signed or "").rpartition(".")
        if not dot or not value:
            return None
        return value if matches(mac, self.mac(purpose, value)) else None


def matches(candidate: object, expected: str) -> bool:
    """Constant-time comparison that also takes whatever a form or cookie sent."""
    if not isinstance(candidate, str):
        return False
    return hmac.compare_digest(candidate.encode(), expected.encode())


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def open_session(
    session: AsyncSession,
    kind: SessionKind,
    merchant_id: str | None,
    *,
    lifetime: timedelta,
    replacing: str | None,
) -> str:
    """A new session's token (the caller commits). Expired sessions are deleted on the way, and
    the one the browser signed in with before (`replacing`, its cookie's token): signing in as
    another merchant left the first session good until it expired, for whoever had its cookie."""
    now = utcnow()
    ended = dashboard_sessions.c.expires_at < now
    if replacing is not None:
        ended = or_(ended, dashboard_sessions.c.id == _digest(replacing))
    await session.execute(delete(dashboard_sessions).where(ended))
    token = secrets.token_urlsafe(32)
    await session.execute(
        insert(dashboard_sessions).values(
            id=_digest(token),
            kind=kind.value,
            merchant_id=merchant_id,
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    return token


async def close_session(session: AsyncSession, token: str) -> None:
    await session.execute(
        delete(dashboard_sessions).where(dashboard_sessions.c.id == _digest(token))
    )


async def close_merchant_sessions(session: AsyncSession, merchant_id: str) -> None:
    """End every dashboard session of the merchant (its API key was replaced: a session opened
    with the old key must not outlive it). The caller commits."""
    await session.execute(
        delete(dashboard_sessions).where(dashboard_sessions.c.merchant_id == merchant_id)
    )


def _live(token: str, kind: SessionKind) -> list[ColumnElement[bool]]:
    return [
        dashboard_sessions.c.id == _digest(token),
        dashboard_sessions.c.kind == kind.value,
        dashboard_sessions.c.expires_at > utcnow(),
    ]


async def merchant_of_session(session: AsyncSession, token: str) -> Merchant | None:
    """The active merchant of a live merchant session: one primary-key lookup and a join."""
    merchant = await session.scalar(
        select(Merchant)
        .join(dashboard_sessions, dashboard_sessions.c.merchant_id == Merchant.id)
        .where(*_live(token, SessionKind.MERCHANT), Merchant.is_active.is_(True))
    )
    if merchant is not None:
        # Detached, like the API's authenticated merchant: a rollback in the request (an
        # idempotent replay) must not expire it into a lazy load.
        session.expunge(merchant)
    return merchant


async def operator_session_is_live(session: AsyncSession, token: str) -> bool:
    found = await session.scalar(
        select(dashboard_sessions.c.id).where(*_live(token, SessionKind.OPERATOR))
    )
    return found is not None


def set_session_cookie(
    response: Response, request: Request, kind: SessionKind, token: str, settings: Settings
) -> None:
    _set_cookie(
        response,
        request,
        _COOKIE_OF[kind],
        Signer.of(settings).sign(_cookie_purpose(kind, settings), token),
        max_age=int(settings.dashboard_session_hours * 3600),
    )


def clear_session_cookie(response: Response, request: Request, kind: SessionKind) -> None:
    response.delete_cookie(
        _COOKIE_OF[kind],
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=_https(request),
    )


def session_token(request: Request, kind: SessionKind, settings: Settings) -> str | None:
    """The token of the request's signed cookie of that kind (not yet checked against a row)."""
    cookie = request.cookies.get(_COOKIE_OF[kind])
    return Signer.of(settings).verified(_cookie_purpose(kind, settings), cookie)


def _cookie_purpose(kind: SessionKind, settings: Settings) -> str:
    """An operator's cookie is signed for the operator token it signed in with: replacing the
    token (after a leak, say) ends every operator session opened with the old one. (A merchant's
    sessions end when its API key is replaced: close_merchant_sessions.)"""
    if kind is SessionKind.OPERATOR:
        return f"session:operator:{_digest(settings.operator_token or '')}"
    return "session"


def _https(request: Request) -> bool:
    return request.url.scheme == "https"


def _set_cookie(
    response: Response, request: Request, name: str, value: str, *, max_age: int
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=_https(request),
    )


def check_origin(request: Request) -> None:
    """A browser names the page a POST came from; it must be this site."""
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        raise CsrfRefused


async def check_form_token(request: Request, expected: str) -> None:
    check_origin(request)
    form = await request.form()
    if not matches(form.get(CSRF_FIELD), expected):
        raise CsrfRefused


@dataclass(frozen=True)
class MerchantSession:
    merchant: Merchant
    token: str  # the cookie's secret: seals stored answers, derives the CSRF token
    csrf_token: str


@dataclass(frozen=True)
class OperatorSession:
    token: str
    csrf_token: str


class SignedInMerchants:
    """The merchants of the sessions this process served lately, by the digest of the cookie's
    token: whose turns a page takes (api_service/client_turns.py), known before its turn without
    reading the database (a page's own read comes in its turn). Kept as long as the merchant of
    an API key: a session ended through another process stops choosing the line within that
    time. Only the line depends on it; the page itself reads its session."""

    def __init__(self, settings: Settings) -> None:
        self._signer = Signer.of(settings)
        self._purpose = _cookie_purpose(SessionKind.MERCHANT, settings)
        self._by_token: ExpiringMap[str, str] = ExpiringMap(settings.api_key_cache_seconds)

    def remember(self, token: str, merchant_id: str) -> None:
        self._by_token.put(_digest(token), merchant_id)

    def merchant_of(self, headers: Headers) -> str | None:
        """The merchant of the request's signed session cookie, if this process knows it."""
        cookie = cookie_parser(headers.get("cookie", "")).get(MERCHANT_COOKIE)
        token = self._signer.verified(self._purpose, cookie)
        return None if token is None else self._by_token.get(_digest(token))


async def merchant_session(
    request: Request, session: SessionDep, settings: SettingsDep
) -> MerchantSession:
    token = session_token(request, SessionKind.MERCHANT, settings)
    merchant = await merchant_of_session(session, token) if token else None
    if token is None or merchant is None:
        raise SignInRequired(MERCHANT_SIGN_IN)
    signed_in: SignedInMerchants = request.app.state.signed_in_merchants
    signed_in.remember(token, merchant.id)
    await before_the_body(session)
    # Its actions call the API's services in-process, past get_current_merchant's count.
    await within_request_rate(session, settings, merchant.id)
    return MerchantSession(merchant, token, Signer.of(settings).mac("csrf", token))


async def merchant_form(
    request: Request, signed_in: Annotated[MerchantSession, Depends(merchant_session)]
) -> MerchantSession:
    """The session of a form post whose CSRF token matches."""
    await check_form_token(request, signed_in.csrf_token)
    return signed_in


async def signing_out(request: Request, settings: SettingsDep) -> str | None:
    """The merchant session a sign-out ends (None: no cookie): its cookie and its form's CSRF
    token decide, not a live merchant nor its request rate. A sign-out refused while the
    merchant was inactive, or over its rate, left the session to work again afterwards."""
    token = session_token(request, SessionKind.MERCHANT, settings)
    if token is not None:
        await check_form_token(request, Signer.of(settings).mac("csrf", token))
    return token


async def operator_session(
    request: Request, session: SessionDep, settings: SettingsDep
) -> OperatorSession:
    token = session_token(request, SessionKind.OPERATOR, settings)
    if token is None or not await operator_session_is_live(session, token):
        raise SignInRequired(OPERATOR_SIGN_IN)
    await before_the_body(session)
    return OperatorSession(token, Signer.of(settings).mac("csrf", token))


async def operator_form(
    request: Request, signed_in: Annotated[OperatorSession, Depends(operator_session)]
) -> OperatorSession:
    await check_form_token(request, signed_in.csrf_token)
    return signed_in


CurrentMerchantSession = Annotated[MerchantSession, Depends(merchant_session)]
MerchantForm = Annotated[MerchantSession, Depends(merchant_form)]
SigningOut = Annotated[str | None, Depends(signing_out)]
CurrentOperatorSession = Annotated[OperatorSession, Depends(operator_session)]
OperatorForm = Annotated[OperatorSession, Depends(operator_form)]


@dataclass(frozen=True)
class SignInForm:
    """The CSRF token of a sign-in form, bound to a nonce cookie (new when the browser had none)."""

    csrf_token: str
    signed_nonce: str

    def keep_nonce(self, request: Request, response: Response) -> None:
        """Sets the nonce cookie on every form rendered, the browser's own nonce too, so that a
        form is good for the cookie's whole lifetime from the moment it is shown (a form shown
        near the end of an old cookie's hour was refused as a CSRF attempt)."""
        _set_cookie(
            response, request, SIGN_IN_COOKIE, self.signed_nonce, max_age=SIGN_IN_NONCE_SECONDS
        )


def sign_in_form(request: Request, settings: Settings) -> SignInForm:
    signer = Signer.of(settings)
    nonce = signer.verified("sign-in", request.cookies.get(SIGN_IN_COOKIE))
    if nonce is None:
        nonce = secrets.token_urlsafe(16)
    return SignInForm(signer.mac("sign-in-csrf", nonce), signer.sign("sign-in", nonce))


async def check_sign_in_form(request: Request, settings: Settings) -> None:
    signer = Signer.of(settings)
    nonce = signer.verified("sign-in", request.cookies.get(SIGN_IN_COOKIE))
    if nonce is None:
        raise CsrfRefused
    await check_form_token(request, signer.mac("sign-in-csrf", nonce))
