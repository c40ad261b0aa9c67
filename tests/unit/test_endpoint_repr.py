"""A merchant's endpoint as the webhook service caches it holds its signing secrets: its repr
(a log line's %r, a traceback's locals in an error report) showed them."""

from webhook_service.endpoints import Endpoint


def test_an_endpoints_repr_shows_no_secret() -> None:
    endpoint = Endpoint("https://merchant.example/hooks", "whsec_current", "whsec_previous", None)

    shown = repr(endpoint)

    assert "whsec_" not in shown
    assert "https://merchant.example/hooks" in shown
