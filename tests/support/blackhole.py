"""A TCP connection made silent both ways, as a network that drops packets leaves it: no RST,
no FIN, nothing acknowledged (iptables rules on its two ports, removed after)."""

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


def _rules(local_port: int, remote_port: int) -> list[list[str]]:
    return [
        ["INPUT", "-p", "tcp", "--sport", str(remote_port), "--dport", str(local_port)],
        ["OUTPUT", "-p", "tcp", "--sport", str(local_port), "--dport", str(remote_port)],
    ]


def require_iptables() -> None:
    if shutil.which("iptables") is None:
        pytest.skip("needs iptables (and root) to drop a connection's packets")


@contextmanager
def silenced(local_port: int, remote_port: int) -> Iterator[None]:
    """Every packet of the loopback connection between the two ports dropped, while inside."""
    rules = _rules(local_port, remote_port)
    for rule in rules:
        subprocess.run(["iptables", "-I", *rule, "-j", "DROP"], check=True)
    try:
        yield
    finally:
        for rule in rules:
            subprocess.run(["iptables", "-D", *rule, "-j", "DROP"], check=True)
