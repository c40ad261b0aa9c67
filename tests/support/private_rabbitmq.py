"""A RabbitMQ node of a test's own, beside the local one: a throwaway data directory, ports of its
own (below Linux's ephemeral range, which a client connection's port may take as the node boots),
the management plugin on. For outages the shared broker must not have (stopped, started)."""

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

START_SECONDS = 60.0
# Ports tried: below the ephemeral range (32768 and up), away from the usual services' ones.
_PORTS = range(21000, 29000)


@dataclass(frozen=True)
class RabbitMQNode:
    node: str  # its Erlang node name, for rabbitmqctl -n
    amqp_url: str  # amqp://guest:guest@127.0.0.1:port/
    management_url: str  # http://guest:guest@127.0.0.1:port

    def ctl(self, *arguments: str, timeout: float = 120) -> str:
        """rabbitmqctl against this node; its output."""
        done = subprocess.run(
            ["rabbitmqctl", "-q", "-n", self.node, *arguments],
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return done.stdout

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.ctl("await_startup")


@contextmanager
def private_rabbitmq() -> Iterator[RabbitMQNode]:
    """A node started, and stopped after the block."""
    with tempfile.TemporaryDirectory(prefix="private-rabbitmq-") as scratch:
        base = Path(scratch)
        amqp, management, distribution = _free_ports(3)
        node = RabbitMQNode(
            node=f"payouts-private-{os.getpid()}@localhost",
            amqp_url=f"amqp://guest:guest@127.0.0.1:{amqp}/",
            management_url=f"http://guest:guest@127.0.0.1:{management}",
        )
        (base / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (base / "rabbitmq.conf").write_text(
            f"management.tcp.port = {management}\nmanagement.tcp.ip = 127.0.0.1\n"
        )
        for directory in ("mnesia", "log"):
            (base / directory).mkdir()
        _owned_by_the_brokers_user(base)
        env = {
            **os.environ,
            "RABBITMQ_NODENAME": node.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(amqp),
            "RABBITMQ_DIST_PORT": str(distribution),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
        }
        server = subprocess.Popen(
            ["rabbitmq-server"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            _until_it_runs(node, server)
            yield node
        finally:
            subprocess.run(
                ["rabbitmqctl", "-q", "-n", node.node, "stop"], capture_output=True, timeout=120
            )
            server.terminate()
            server.wait(timeout=START_SECONDS)


def _free_ports(count: int) -> list[int]:
    found: list[int] = []
    for port in _PORTS[os.getpid() % 1000 :: 7]:  # runs side by side start apart
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise AssertionError("no free port for a private RabbitMQ")


def _owned_by_the_brokers_user(base: Path) -> None:
    """Debian's rabbitmq-server, started as root, runs the node as the `rabbitmq` user."""
    if os.geteuid() != 0:
        return
    for path in (base, *base.rglob("*")):
        shutil.chown(path, "rabbitmq", "rabbitmq")


def _until_it_runs(node: RabbitMQNode, server: "subprocess.Popen[bytes]") -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"rabbitmq-server exited with {server.returncode}")
        started = subprocess.run(
            ["rabbitmqctl", "-q", "-n", node.node, "await_startup", "--timeout", "5"],
            capture_output=True,
            timeout=30,
        )
        if started.returncode == 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"RabbitMQ node {node.node} did not start within {START_SECONDS} s")
