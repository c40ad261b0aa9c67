"""Stopping and starting the real servers, and cutting connections, for the fault tests."""

import subprocess
import time
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

SERVER_START_TIMEOUT_SECONDS = 120.0


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=120)


def _wait_for(*command: str) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_SECONDS
    while subprocess.run(command, capture_output=True, timeout=30).returncode != 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"{' '.join(command)} did not succeed in time")
        time.sleep(0.5)


def stop_rabbitmq() -> None:
    _run("rabbitmqctl", "stop_app")


def start_rabbitmq() -> None:
    _run("rabbitmqctl", "start_app")
    _run("rabbitmqctl", "await_startup")


def stop_mariadb() -> None:
    _run("mysqladmin", "-uroot", "shutdown")  # over the socket, as the local root


def start_mariadb() -> None:
    _run("start-stop-daemon", "--start", "--oknodo", "--background", "--exec", "/usr/sbin/mariadbd")
    _wait_for("mysqladmin", "--protocol=TCP", "-h127.0.0.1", "-uroot", "ping")


def close_connections(management_url: str, vhost: str) -> int:
    """What an operator does in the management UI: close every client connection of the vhost."""
    parts = urlsplit(management_url)
    base = urlunsplit(parts._replace(netloc=f"{parts.hostname}:{parts.port or 15672}"))
    auth = (parts.username or "guest", parts.password or "guest")
    with httpx.Client(base_url=base, auth=auth, timeout=30) as client:
        connections = client.get(f"/api/vhosts/{quote(vhost, safe='')}/connections").json()
        for connection in connections:
            client.delete(
                f"/api/connections/{quote(connection['name'], safe='')}",
                headers={"X-Reason": "fault test: connection cut"},
            ).raise_for_status()
    return len(connections)
