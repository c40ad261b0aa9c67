"""Operations: a separate sign-in with PAYOUTS_OPERATOR_TOKEN (no token configured, or in
production one too short to resist guessing: these pages do not exist), pipeline health, and
re-driving a dead-letter queue. Nothing else changes here."""

import logging
from datetime import timedelta
from typing import Any

from fastapi import Request
from starlette.responses import RedirectResponse, Response

from api_service.dashboard.context import back_to, notice_of, redirect
from api_service.dashboard.pages.sign_in import (
    session_lifetime,
    sign_in_page,
    signed_in,
)
from api_service.dashboard.pipeline import pipeline_health, redrive_dead_letters, work_queue_names
from api_service.dashboard.rendering import page
from api_service.dashboard.routing import dashboard_router
from api_service.dashboard.sessions import (
    CSRF_FIELD,
    NEXT_FIELD,
    OPERATOR_SIGN_IN,
    CurrentOperatorSession,
    OperatorForm,
    SessionKind,
    check_sign_in_form,
    clear_session_cookie,
    close_session,
    matches,
    open_session,
    session_token,
)
from api_service.deps import SessionDep, SettingsDep, count_refused_credentials
from api_service.errors import NotFound
from contracts.ledger_audit import AUDIT_EVERY

log = logging.getLogger("api.dashboard")
router = dashboard_router()
OPERATIONS = "/dashboard/operations"


@router.get(OPERATOR_SIGN_IN)
async def show_operator_sign_in(request: Request, settings: SettingsDep) -> Response:
    next_path = back_to(request.query_params.get(NEXT_FIELD), OPERATIONS)
    return sign_in_page(request, settings, operator=True, next_path=next_path)


@router.post(OPERATOR_SIGN_IN)
async def operator_sign_in(
    request: Request, session: SessionDep, settings: SettingsDep
) -> Response:
    await check_sign_in_form(request, settings)
    form = await request.form()
    token = form.get("operator_token")
    next_path = back_to(form.get(NEXT_FIELD), OPERATIONS)
    assert settings.operator_token is not None, "the router exists only with a token"
    if not matches(token, settings.operator_token):
        count_refused_credentials("operator_token", "dashboard operator sign-in refused")
        return sign_in_page(
            request,
            settings,
            operator=True,
            next_path=next_path,
            error="That is not the operator token.",
            status_code=401,
        )
    token = await open_session(
        session,
        SessionKind.OPERATOR,
        None,
        lifetime=session_lifetime(settings),
        replacing=session_token(request, SessionKind.OPERATOR, settings),
    )
    await session.commit()
    log.info("dashboard operator sign-in")
    return signed_in(request, settings, SessionKind.OPERATOR, token, next_path)


@router.post(f"{OPERATIONS}/sign-out")
async def operator_sign_out(request: Request, form: OperatorForm, session: SessionDep) -> Response:
    await close_session(session, form.token)
    await session.commit()
    response = RedirectResponse(OPERATOR_SIGN_IN, status_code=303)
    clear_session_cookie(response, request, SessionKind.OPERATOR)
    return response


@router.get(OPERATIONS)
async def show_operations(
    request: Request, operator: CurrentOperatorSession, settings: SettingsDep
) -> Response:
    health = await pipeline_health(request.app.state.sessions, settings)
    context: dict[str, Any] = {
        "sandbox": settings.sandbox_enabled,
        "csrf_field": CSRF_FIELD,
        "csrf_token": operator.csrf_token,
        "notice": notice_of(request),
        "error": None,
        "health": health,
        "audit_minutes": round(AUDIT_EVERY / timedelta(minutes=1)),
    }
    return page("operations.html", context)


@router.post(f"{OPERATIONS}/queues/{{queue}}/redrive")
async def redrive_queue(queue: str, operator: OperatorForm, settings: SettingsDep) -> Response:
    if queue not in work_queue_names(settings):
        raise NotFound("No such work queue")
    moved = await redrive_dead_letters(settings, queue)
    log.info("dashboard operator re-drove %d dead letters of %s", moved, queue)
    return redirect(OPERATIONS, done="redriven", count=moved)
