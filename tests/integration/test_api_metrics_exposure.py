"""The API's /metrics is on the port merchants reach. In production anyone could read it: how
many payouts every merchant together created and how many failed, and how many key guesses the
PSP counted (metrics review). Behind PAYOUTS_METRICS_TOKEN if set; unset, open in test mode
and not served in production."""

import pytest

from contracts.settings import Environment, Settings
from tests.conftest import in_process_api, in_production

TOKEN = "a-metrics-token-of-the-operators-own"


@pytest.mark.parametrize(
    ("env", "token", "sent", "status"),
    [
        (Environment.TEST, None, None, 200),
        (Environment.PRODUCTION, None, None, 404),
        (Environment.PRODUCTION, None, f"Bearer {TOKEN}", 404),
        (Environment.PRODUCTION, TOKEN, None, 401),
        (Environment.PRODUCTION, TOKEN, "Bearer wrong", 401),
        (Environment.PRODUCTION, TOKEN, f"Bearer {TOKEN}", 200),
        (Environment.TEST, TOKEN, None, 401),
    ],
)
async def test_metrics_are_served_to_whom_the_settings_say(
    settings: Settings, env: Environment, token: str | None, sent: str | None, status: int
) -> None:
    if env is Environment.PRODUCTION:
        configured = in_production(settings, metrics_token=token)
    else:
        configured = settings.model_copy(update={"metrics_token": token})
    headers = {"Authorization": sent} if sent else {}
    async with in_process_api(configured) as client:
        answer = await client.get("/metrics", headers=headers)

    assert answer.status_code == status, answer.text
    if status == 200:
        assert "payouts_api_requests_total" in answer.text
    if status == 401:
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.json()["error"]["code"] == "INVALID_METRICS_TOKEN"
