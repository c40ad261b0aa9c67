"""Merchant sign-in with the sandbox API key, and sign-out."""

import logging
from datetime import timedelta

from fastapi import Request
from starlette.responses import RedirectResponse, Response

from api_service.dashboard.context import HOME, back_to
from api_service.dashboard.rendering import page
from api_service.dashboard.routing import dashboard_router
from api_service.dashboard.sessions import (
    CSRF_FIELD,
    MERCHANT_SIGN_IN,
    NEXT_FIELD,
    SessionKind,
    SigningOut,
    check_sign_in_form,
    clear_session_cookie,
    close_session,
    merchant_of_session,
    open_session,
    session_token,
    set_session_cookie,
    sign_in_form,
)
from api_service.deps import SessionDep, SettingsDep, merchant_of_digest
from api_service.errors import InvalidApiKey
from contracts.api_keys import hash_api_key
from contracts.domain.text import trimmed
from contracts.settings import Settings

log = logging.getLogger("api.dashboard")
router = dashboard_router()


def sign_in_page(
    request: Request,
    settings: Settings,
    *,
    operator: bool,
    next_path: str,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    """`next_path`: the page to go on to once signed in (NEXT_FIELD, if one of ours)."""
    form = sign_in_form(request, settings)
    context = {
        "next_path": next_path,
        "operator": operator,
        "sandbox": settings.sandbox_enabled,
        "action": "/dashboard/operations/sign-in" if operator else MERCHANT_SIGN_IN,
        "csrf_field": CSRF_FIELD,
        "csrf_token": form.csrf_token,
        "sign_in_error": error,
    }
    response = page("sign_in.html", context, status_code)
    form.keep_nonce(request, response)
    return response


def signed_in(
    request: Request, settings: Settings, kind: SessionKind, token: str, home: str
) -> Response:
    response = RedirectResponse(home, status_code=303)
    set_session_cookie(response, request, kind, token, settings)
    return response


def session_lifetime(settings: Settings) -> timedelta:
    return timedelta(hours=settings.dashboard_session_hours)


@router.get("/dashboard")
async def dashboard_home() -> Response:
    return RedirectResponse(HOME, status_code=303)


@router.get(MERCHANT_SIGN_IN)
async def show_sign_in(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    next_path = back_to(request.query_params.get(NEXT_FIELD), HOME)
    token = session_token(request, SessionKind.MERCHANT, settings)
    if token is not None and await merchant_of_session(session, token) is not None:
        return RedirectResponse(next_path, status_code=303)
    return sign_in_page(request, settings, operator=False, next_path=next_path)


@router.post(MERCHANT_SIGN_IN)
async def sign_in(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    await check_sign_in_form(request, settings)
    form = await request.form()
    api_key = form.get("api_key")
    next_path = back_to(form.get(NEXT_FIELD), HOME)
    if not isinstance(api_key, str) or not trimmed(api_key):
        return sign_in_page(
            request,
            settings,
            operator=False,
            next_path=next_path,
            error="Enter your API key.",
            status_code=400,
        )
    try:
        # The API's own lookup of a key (same timing for every wrong key, same failure metric).
        merchant = await merchant_of_digest(session, hash_api_key(trimmed(api_key)))
    except InvalidApiKey:
        return sign_in_page(
            request,
            settings,
            operator=False,
            next_path=next_path,
            error="This API key is not valid, or its merchant is inactive.",
            status_code=401,
        )
    token = await open_session(
        session,
        SessionKind.MERCHANT,
        merchant.id,
        lifetime=session_lifetime(settings),
        replacing=session_token(request, SessionKind.MERCHANT, settings),
    )
    await session.commit()
    log.info("dashboard sign-in of merchant %s", merchant.id)
    return signed_in(request, settings, SessionKind.MERCHANT, token, next_path)


@router.post("/dashboard/sign-out")
async def sign_out(request: Request, token: SigningOut, session: SessionDep) -> Response:
    if token is not None:
        await close_session(session, token)
        await session.commit()
    response = RedirectResponse(MERCHANT_SIGN_IN, status_code=303)
    clear_session_cookie(response, request, SessionKind.MERCHANT)
    return response
