"""docker-compose.yml judges the relay, the processor, the webhook service and the sink by their
heartbeats: each is given a heartbeat file, and a healthcheck that asks its age."""

import pytest

from contracts.heartbeat import BEAT_EVERY_SECONDS, HEARTBEAT_FILE_VARIABLE
from tests.unit.test_deployment_files import environment, services

HEARTBEAT_SERVICES = ("outbox-relay", "processor", "webhooks", "webhook-sink")


def _seconds(duration: str) -> float:
    assert duration.endswith("s"), duration
    return float(duration[:-1])


@pytest.mark.parametrize("name", HEARTBEAT_SERVICES)
def test_each_consumer_and_the_sink_is_judged_by_its_heartbeat(name: str) -> None:
    service = services()[name]
    assert environment(service)[HEARTBEAT_FILE_VARIABLE].startswith("/tmp/")  # writable as 10001
    check = service["healthcheck"]
    assert check["test"][:4] == ["CMD", "python", "-m", "cli.healthcheck"]
    max_age = float(check["test"][check["test"].index("--max-age-seconds") + 1])
    # Several beats may be missed (a slow host) before a working service reads as stale, and a
    # check fits within its timeout.
    assert max_age >= 3 * BEAT_EVERY_SECONDS
    assert _seconds(check["timeout"]) <= _seconds(check["interval"])


def test_the_scalable_services_keep_their_heartbeats_apart() -> None:
    """Each replica has a container, hence a /tmp, of its own: no shared volume is mounted."""
    for name in HEARTBEAT_SERVICES:
        assert "volumes" not in services()[name]
