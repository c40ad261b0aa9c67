"""`payouts webhook-sink --secret-of-merchant-at URL`, as docker-compose.yml runs it: the sink
reads the demo merchant's secret from the database as it starts (a plain `docker compose up`
chooses no secret: the seed makes one), and verifies every webhook with it. It verified none:
every event was printed `[unverified: no --secret]`."""

import socket
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from cli.supervisor import payouts_command
from contracts.api_keys import new_webhook_secret
from contracts.webhook_signing import webhook_headers
from tests.conftest import MerchantFactory

BODY = b'{"id": "evt_sink", "type": "payout.created", "payout": {"id": "p-1"}}'


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _signed(secret: str) -> dict[str, str]:
    return webhook_headers(
        event_id="evt_sink",
        legacy_event="PAYOUT_CREATED",
        timestamp=int(time.time()),
        body=BODY,
        secrets=[secret],
    )


@pytest.fixture
def sink_url() -> str:
    return f"http://127.0.0.1:{_free_port()}/webhooks"


@pytest.fixture
def sink(service_env: dict[str, str], sink_url: str) -> Iterator[subprocess.Popen[str]]:
    port = sink_url.split(":")[2].split("/")[0]
    process = subprocess.Popen(
        payouts_command("webhook-sink", "--port", port, "--secret-of-merchant-at", sink_url),
        env=service_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(10)


def _post(url: str, headers: dict[str, str]) -> httpx.Response:
    deadline = time.monotonic() + 20
    while True:
        try:
            return httpx.post(url, content=BODY, headers=headers)
        except httpx.ConnectError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # polling for the port with a deadline, not waiting for work


async def test_the_sink_verifies_with_the_secret_of_the_merchant_whose_url_it_is(
    make_merchant: MerchantFactory, sink_url: str, request: pytest.FixtureRequest
) -> None:
    merchant = await make_merchant(webhook_url=sink_url)
    sink: subprocess.Popen[str] = request.getfixturevalue("sink")  # after the merchant exists

    forged = _post(sink_url, _signed(new_webhook_secret()))
    signed = _post(sink_url, _signed(merchant.webhook_secret))

    assert (forged.status_code, signed.status_code) == (401, 204)
    sink.terminate()
    printed = sink.communicate(timeout=10)[0]
    assert "evt_sink payout.created payout=p-1" in printed and "[signature ok]" in printed
    # Stopped cleanly: uvicorn raised the SIGTERM again once it had, `Exited (143)` under
    # compose where every other service exits 0 (containers review).
    assert sink.returncode == 0, printed[-2000:]
