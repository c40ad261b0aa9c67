"""The dashboard's routes answer in HTML: a page that needs a session sends the browser to sign
in, a refusal (the API's, a CSRF check's, a bad query) is an error page with the API's status
and message, and every answer carries the security headers. One route class does all of it, so
the page handlers only handle pages."""

from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from api_service.dashboard.api_bridge import ApiRefusal
from api_service.dashboard.context import HOME, back_to
from api_service.dashboard.rendering import SECURITY_HEADERS, page
from api_service.dashboard.sessions import CsrfRefused, SignInRequired
from api_service.errors import ApiError, ValidationFailed
from contracts.logging import bound

CSRF_MESSAGE = (
    "This form was not sent by this dashboard (its CSRF token is missing or out of date). "
    "Reload the page and try again."
)


def error_page(status_code: int, message: str, code: str = "", back: str = HOME) -> Response:
    """`back`: where its Back link goes (HOME, or the page whose form was refused)."""
    label = "Back to the dashboard" if back == HOME else "Back to the page you were on"
    context = {"status_code": status_code, "message": message, "code": code}
    context |= {"back": back, "back_label": label}
    # The request's id, for support to find it by: only its X-Request-ID header had it, which a
    # browser does not show (dashboard outages review).
    context["reference"] = bound("request_id")
    return page("error.html", context, status_code=status_code)


def page_of_the_form(request: Request) -> str:
    """The page a refused form was sent from (its Referer, when a page of ours on this host),
    so that Back returns to it, filters and page number kept; HOME for any other request."""
    referer = urlsplit(request.headers.get("referer", ""))
    if request.method != "POST" or referer.netloc != request.url.netloc:
        return HOME
    return back_to(referer.path + (f"?{referer.query}" if referer.query else ""), HOME)


def refusal_page(status_code: int, message: str, code: str) -> Response:
    """The page of a request refused outside the dashboard's routes: before any route ran (a
    file over the size limit), or by none (an address with no page, or no page for GET)."""
    response = error_page(status_code, message, code)
    response.headers.update(SECURITY_HEADERS)
    return response


class DashboardRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_page(request: Request) -> Response:
            back = page_of_the_form(request)
            try:
                response = await handle(request)
            except SignInRequired as required:
                response = RedirectResponse(required.redirect_for(request), status_code=303)
            except CsrfRefused:
                response = error_page(403, CSRF_MESSAGE, "CSRF_REFUSED", back)
            except ApiRefusal as refusal:
                answer = refusal.answer
                response = error_page(
                    answer.status_code, answer.error_message, answer.error_code, back
                )
            except ApiError as error:
                response = error_page(error.status_code, error.message, error.code, back)
                response.headers.update(error.headers or {})  # a 429's Retry-After, as the API's
            except RequestValidationError as invalid:
                failure = ValidationFailed.from_pydantic(invalid.errors())
                response = error_page(400, failure.message, failure.code, back)
            response.headers.update(SECURITY_HEADERS)
            return response

        return handle_page


def dashboard_router() -> APIRouter:
    return APIRouter(route_class=DashboardRoute, include_in_schema=False)
