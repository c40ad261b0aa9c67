"""The servers the fault tests stop and start, and cut connections of: a MariaDB and a RabbitMQ of
their own (tests/support/private_*.py), so that the rest of the suite may run beside them against
the local ones (make test runs them beside its first tier)."""

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tests.support.private_mariadb import MariaDBServer, private_mariadb_server
from tests.support.private_rabbitmq import RabbitMQNode, private_rabbitmq


@dataclass(frozen=True)
class FaultServers:
    database: MariaDBServer
    broker: RabbitMQNode

    def stop_rabbitmq(self) -> None:
        self.broker.stop_app()

    def start_rabbitmq(self) -> None:
        self.broker.start_app()

    def stop_mariadb(self) -> None:
        self.database.stop()

    def start_mariadb(self) -> None:
        self.database.start()

    def connections_of(self, vhost: str) -> list[str]:
        """The process ids of the vhost's client connections, as the broker itself lists them
        (the management UI's list can miss connections opened while the broker was starting)."""
        rows = [
            line.split("\t")
            for line in self.broker.ctl("list_connections", "pid", "vhost").splitlines()
        ]
        return [row[0] for row in rows if len(row) == 2 and row[1] == vhost]

    def close_connections(self, vhost: str) -> int:
        """What an operator does from the UI or the CLI: close every client connection of the
        vhost. A connection may be gone already (closed by its owner since the listing)."""
        closed = 0
        for pid in self.connections_of(vhost):
            try:
                self.broker.ctl("close_connection", pid, "fault test: connection cut", timeout=60)
            except subprocess.CalledProcessError:  # gone since the listing
                continue
            closed += 1
        return closed


@contextmanager
def fault_servers() -> Iterator[FaultServers]:
    with (
        private_mariadb_server("--innodb-buffer-pool-size=64M") as database,
        private_rabbitmq() as broker,
    ):
        yield FaultServers(database, broker)
