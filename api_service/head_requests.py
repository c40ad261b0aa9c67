"""HEAD answered as GET without the body (RFC 9110 §9.3.2: a server that answers GET answers
HEAD). FastAPI's routes take only the methods they declare, so an uptime monitor's HEAD
/api/v1/health got 405, and so did HEAD on a dashboard page."""

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGetMiddleware:
    """Runs a HEAD request as the GET of the same path and sends its status and headers
    (Content-Length included) with an empty body. Outer middleware still sees HEAD."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        as_get = {**scope, "method": "GET"}
        try:
            await self.app(as_get, receive, send_without_body)
        finally:
            if "route" in as_get:  # the route matched: outer middleware labels metrics with it
                scope["route"] = as_get["route"]
