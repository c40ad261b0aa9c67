"""How `payouts up` (`make run`) starts and stops its services, where it went wrong (supervisor
review): a taken API port was announced as a running sandbox (another server's /ready answered),
a crashed API's workers served on after everything stopped, a second Ctrl-C returned with the
services running, `nohup make run &` stopped with the terminal, a start that timed out did not
say what the API waited for, and an IPv6 API host was a traceback."""

import http.server
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.supervisor import ServiceGroup, StartupFailed
from cli.up import api_base_url, refuse_a_taken_port, stop_on_signals


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def test_a_taken_api_port_is_refused_before_anything_starts() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit, match=f"port {port} on 127.0.0.1 is in use"):
            refuse_a_taken_port("127.0.0.1", port)
    refuse_a_taken_port("127.0.0.1", port)  # free again


def test_an_ipv6_api_host_is_a_url() -> None:
    assert api_base_url("::", 8000) == "http://[::]:8000"
    assert api_base_url("127.0.0.1", 8000) == "http://127.0.0.1:8000"


@pytest.fixture
def signal_handlers() -> Iterator[None]:
    saved = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGHUP)}
    yield
    for number, handler in saved.items():
        signal.signal(number, handler)


@pytest.mark.usefixtures("signal_handlers")
def test_nohup_is_heard_a_terminal_closing_is_ignored_as_nohup_asked() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup starts it

    stop_on_signals()

    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) is signal.default_int_handler


def session(script: str, pid_file: Path) -> subprocess.Popen[bytes]:
    """A service's leader in a session of its own, as ServiceGroup starts it."""
    process = subprocess.Popen(["sh", "-c", script], start_new_session=True)
    deadline = time.monotonic() + 10
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline, "the session never started"
        time.sleep(0.05)
    return process


def test_a_dead_services_leftover_processes_are_killed_on_stop(tmp_path: Path) -> None:
    """An API whose uvicorn supervisor died leaves its workers serving on its port."""
    pid_file = tmp_path / "worker.pid"
    leader = session(f"sleep 300 & echo $! > {pid_file}; exit 3", pid_file)
    leader.wait(timeout=10)
    worker = int(pid_file.read_text())
    group = ServiceGroup(env={})
    group.processes["api"] = leader

    group.stop()

    deadline = time.monotonic() + 10
    while alive(worker):
        assert time.monotonic() < deadline, "the dead API's worker serves on"
        time.sleep(0.05)


def test_a_second_interrupt_while_stopping_kills_every_service_at_once(tmp_path: Path) -> None:
    pid_file = tmp_path / "stubborn.pid"
    stubborn = session(
        f"trap '' TERM; echo $$ > {pid_file}; while true; do sleep 1; done", pid_file
    )
    group = ServiceGroup(env={})
    group.processes["webhooks"] = stubborn
    threading.Timer(0.5, signal.raise_signal, (signal.SIGINT,)).start()  # Ctrl-C, again

    try:
        with pytest.raises(KeyboardInterrupt):
            group.stop()

        assert stubborn.poll() is not None
    finally:
        stubborn.kill()


class NotReady(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"status":"not ready","rabbitmq":"down"}'
        self.send_response(503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_start_that_times_out_says_what_the_api_answered() -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), NotReady)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(StartupFailed, match=r'answered last: 503 .*"rabbitmq":"down"'):
            ServiceGroup(env={}).wait_until_ready(url, within=1)
    finally:
        server.shutdown()
        server.server_close()
