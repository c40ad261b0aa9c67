"""The dashboard behind a TLS-terminating proxy on another host (here 127.0.0.2, the API's
process on 127.0.0.1): the proxy says `X-Forwarded-Proto: https`, the browser's forms say
`Origin: https://...`. The API believed only a proxy on 127.0.0.1, with no setting to name
another: every form was refused as a cross-site request, and the cookies were not `Secure`."""

import re
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.conftest import MerchantFactory
from tests.support.system import running_api

PROXY = "127.0.0.2"  # a host of its own on the loopback network
FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="module")
def proxied_api(
    service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    env = {**service_env, "PAYOUTS_FORWARDED_ALLOW_IPS": PROXY}
    with running_api(env, tmp_path_factory.mktemp("proxied-api")) as base_url:
        yield base_url


@pytest.fixture
async def proxy(proxied_api: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client connecting from the proxy's address, forwarding an HTTPS browser's requests."""
    transport = httpx.AsyncHTTPTransport(local_address=PROXY)
    async with httpx.AsyncClient(
        transport=transport, base_url=proxied_api, headers=FORWARDED
    ) as client:
        yield client


def cookie_of(response: httpx.Response, name: str) -> tuple[str, str]:
    """The cookie's value and its whole Set-Cookie line (httpx would not send a Secure cookie
    back over http, so the test carries it by hand)."""
    for line in response.headers.get_list("set-cookie"):
        if line.startswith(f"{name}="):
            return line.split(";", 1)[0].split("=", 1)[1], line
    raise AssertionError(f"no {name} cookie in {response.headers.get_list('set-cookie')}")


async def test_a_merchant_signs_in_through_a_proxy_it_names(
    proxy: httpx.AsyncClient, proxied_api: str, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()
    form = await proxy.get("/dashboard/sign-in")
    nonce, nonce_line = cookie_of(form, "payouts_sign_in")
    assert "secure" in nonce_line.lower()

    signed_in = await proxy.post(
        "/dashboard/sign-in",
        data={"csrf_token": CSRF.findall(form.text)[0], "api_key": merchant.api_key},
        headers={
            "Origin": proxied_api.replace("http://", "https://"),
            "Cookie": f"payouts_sign_in={nonce}",
        },
    )

    assert signed_in.status_code == 303, signed_in.text
    _, session_line = cookie_of(signed_in, "payouts_dashboard")
    assert "secure" in session_line.lower()


async def test_a_proxy_not_named_is_not_believed(
    proxy: httpx.AsyncClient, proxied_api: str
) -> None:
    """From the API's own host (not the proxy named), the forwarded scheme is ignored."""
    async with httpx.AsyncClient(base_url=proxied_api, headers=FORWARDED) as elsewhere:
        form = await elsewhere.get("/dashboard/sign-in")
    _, nonce_line = cookie_of(form, "payouts_sign_in")
    assert "secure" not in nonce_line.lower()
