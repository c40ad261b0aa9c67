"""Signing in to the dashboard (a merchant, or an operator) with an HTTP client (no browser),
for tests of its forms."""

import re

import httpx

from cli.merchants import NewMerchant

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def signed_in(client: httpx.AsyncClient, merchant: NewMerchant) -> str:
    """Signs in; the CSRF token of the session's forms."""
    form = await client.get("/dashboard/sign-in")
    answer = await client.post(
        "/dashboard/sign-in",
        data={"csrf_token": CSRF.findall(form.text)[0], "api_key": merchant.api_key},
    )
    assert answer.status_code == 303, answer.text
    return CSRF.findall((await client.get("/dashboard/payouts/new")).text)[0]


async def operator_signed_in(client: httpx.AsyncClient, operator_token: str) -> str:
    """Signs in to the operations pages; the CSRF token of their forms."""
    form = await client.get("/dashboard/operations/sign-in")
    answer = await client.post(
        "/dashboard/operations/sign-in",
        data={"csrf_token": CSRF.findall(form.text)[0], "operator_token": operator_token},
    )
    assert answer.status_code == 303, answer.text
    return CSRF.findall((await client.get("/dashboard/operations")).text)[0]
