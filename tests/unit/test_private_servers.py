"""The tests' own servers (tests/support/private_*.py) never outlive a failed start."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import private_mariadb
from tests.support.private_mariadb import MariaDBServer
from tests.support.system import free_port


def test_a_mariadb_that_does_not_answer_in_time_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Left running (its data directory then deleted under it) when it did not answer within
    its 30 s, on a host busy with the first tier (diff review)."""
    started: list[subprocess.Popen[bytes]] = []

    def never_answers(_socket: Path, process: subprocess.Popen[bytes]) -> None:
        started.append(process)
        raise AssertionError("mariadbd did not answer")

    monkeypatch.setattr(private_mariadb, "_until_it_answers", never_answers)
    server = MariaDBServer(tmp_path / "data", tmp_path / "mysqld.sock", free_port(), ())

    with pytest.raises(AssertionError):
        server.start()

    [process] = started
    assert process.poll() is not None and server.process is None


def test_a_mariadb_that_ignores_its_stop_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hung, it ignored SIGTERM: the wait raised, hiding why it was stopped, and it outlived its
    data directory (diff review)."""
    monkeypatch.setattr(private_mariadb, "START_SECONDS", 0.5)
    server = MariaDBServer(tmp_path / "data", tmp_path / "mysqld.sock", free_port(), ())
    ignores_term = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('deaf', flush=True); time.sleep(60)"
    )
    hung = subprocess.Popen([sys.executable, "-c", ignores_term], stdout=subprocess.PIPE)
    assert hung.stdout is not None and hung.stdout.readline() == b"deaf\n"
    server.process = hung

    server.stop()

    assert hung.poll() is not None and server.process is None
