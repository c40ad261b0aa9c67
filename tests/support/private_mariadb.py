"""A MariaDB server of a test's own, for states the shared server must not be put in (read-only,
as a replica or a primary a failover demoted): a throwaway data directory, a free port."""

import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.system import free_port

START_SECONDS = 30.0


@dataclass
class MariaDBServer:
    """A server on a data directory of its own, which a test may stop and start again."""

    data: Path
    socket: Path
    port: int
    options: tuple[str, ...]
    process: "subprocess.Popen[bytes] | None" = None

    @property
    def url(self) -> str:
        """The URL of its `mysql` database for root, whom it takes with any password."""
        return f"mysql+asyncmy://root@127.0.0.1:{self.port}/mysql"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "mariadbd",
                "--no-defaults",
                f"--datadir={self.data}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--socket={self.socket}",
                "--user=root",
                "--skip-grant-tables",
                "--innodb-buffer-pool-size=16M",
                *self.options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _until_it_answers(self.socket, self.process)
        except BaseException:  # not left running, its data directory deleted under it
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()  # a clean shutdown, as `mysqladmin shutdown`
            try:
                self.process.wait(timeout=START_SECONDS)
            except subprocess.TimeoutExpired:  # hung: not left running, its data deleted
                self.process.kill()
                self.process.wait()
            self.process = None


@contextmanager
def private_mariadb_server(*options: str) -> Iterator[MariaDBServer]:
    """A server started with `options` (e.g. `--read-only`), stopped after the block."""
    with tempfile.TemporaryDirectory(prefix="private-mariadb-") as scratch:
        data, socket = Path(scratch) / "data", Path(scratch) / "mysqld.sock"
        subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root"],
            check=True,
            capture_output=True,
        )
        server = MariaDBServer(data, socket, free_port(), options)
        server.start()
        try:
            yield server
        finally:
            server.stop()


@contextmanager
def private_mariadb(*options: str) -> Iterator[str]:
    """A server started with `options` (e.g. `--read-only`); yields the URL of its `mysql`
    database for root, whom it takes with any password (`--skip-grant-tables`)."""
    with private_mariadb_server(*options) as server:
        yield server.url


async def set_read_only(url: str, read_only: bool) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(f"SET GLOBAL read_only = {int(read_only)}"))
    finally:
        await engine.dispose()


def _until_it_answers(socket: Path, server: "subprocess.Popen[bytes]") -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"mariadbd exited with {server.returncode}")
        ping = subprocess.run(
            ["mariadb-admin", "--no-defaults", f"--socket={socket}", "ping"], capture_output=True
        )
        if ping.returncode == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"mariadbd did not answer within {START_SECONDS} s")
