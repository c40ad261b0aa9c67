"""The relay's, processor's and webhook service's /metrics listened on every interface, with no
setting to say otherwise (`make run` serves them on 9101-9103): they listen on loopback unless
PAYOUTS_METRICS_HOST says otherwise, as the API does unless PAYOUTS_API_HOST does (metrics
review). 127.0.0.2 stands in for an interface beyond 127.0.0.1."""

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.system import free_port

ROOT = Path(__file__).resolve().parents[2]
SERVE = """
import time
from contracts.metrics_server import serve_metrics
from contracts.settings import Settings
serve_metrics(Settings(_env_file=None))
time.sleep(60)
"""


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def metrics_served(port: int, host: str | None) -> Iterator[str]:
    """A process serving metrics on `port` (and `host`, if given); yields the host it names."""
    env = {"PAYOUTS_METRICS_PORT": str(port), **({"PAYOUTS_METRICS_HOST": host} if host else {})}
    serving = subprocess.Popen([sys.executable, "-c", SERVE], cwd=ROOT, env=env)
    named = host or "127.0.0.1"
    try:
        deadline = time.monotonic() + 20
        while not answers(named, port):
            assert time.monotonic() < deadline, "metrics never served"
            assert serving.poll() is None, "the metrics process ended"
            time.sleep(0.05)
        yield named
    finally:
        serving.kill()
        serving.wait()


@pytest.mark.parametrize(("host", "elsewhere"), [(None, "127.0.0.2"), ("127.0.0.2", "127.0.0.1")])
def test_service_metrics_listen_on_the_metrics_host_only(host: str | None, elsewhere: str) -> None:
    port = free_port()
    with metrics_served(port, host):
        assert not answers(elsewhere, port), f"metrics answer on {elsewhere} too"
