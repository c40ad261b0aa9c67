"""Stopping and starting the real servers, and cutting connections, for the fault tests."""

import subprocess
import time

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


MARIADB_PID_FILE = "/run/mysqld/mysqld.pid"  # /etc/mysql/my.cnf's pid-file


def stop_mariadb() -> None:
    _run("mysqladmin", "-uroot", "shutdown")  # over the socket, as the local root


def start_mariadb() -> None:
    # By its pid file: by its program alone, a container's mariadbd (CI's container checks run
    # beside these tests) was "already running", and the local server stayed down.
    _run(
        "start-stop-daemon",
        "--start",
        "--oknodo",
        "--background",
        "--pidfile",
        MARIADB_PID_FILE,
        "--exec",
        "/usr/sbin/mariadbd",
    )
    _wait_for("mysqladmin", "--protocol=TCP", "-h127.0.0.1", "-uroot", "ping")


def connections_of(vhost: str) -> list[str]:
    """The process ids of the vhost's client connections, as the broker itself lists them (the
    management UI's list can miss connections opened while the broker was starting)."""
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "pid", "vhost"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    rows = [line.split("\t") for line in listed.splitlines()]
    return [row[0] for row in rows if len(row) == 2 and row[1] == vhost]


def close_connections(vhost: str) -> int:
    """What an operator does from the UI or the CLI: close every client connection of the vhost."""
    closed = 0
    for pid in connections_of(vhost):
        command = ("rabbitmqctl", "close_connection", pid, "fault test: connection cut")
        # a connection may be gone already (closed by its owner since the listing)
        closed += subprocess.run(command, capture_output=True, timeout=60).returncode == 0
    return closed
