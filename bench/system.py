"""The system under test as processes: which services, how many of each, started on the bench's
database and vhost; ready once the API answers /ready and every consumer is attached."""

import asyncio
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from bench.infrastructure import BenchInfrastructure
from cli.supervisor import Service, ServiceGroup, environment, payouts_command
from contracts.topology import (
    BULK_PAYOUT_COMMANDS,
    PAYOUT_COMMANDS,
    webhook_events_queue,
)
from tests.support.system import free_port

READY_TIMEOUT_SECONDS = 60.0


def webhook_service_available() -> bool:
    """`payouts webhooks --help` works: the webhook delivery service exists in this checkout."""
    try:
        probe = subprocess.run(
            payouts_command("webhooks", "--help"), capture_output=True, timeout=60, check=False
        )
    except subprocess.TimeoutExpired:
        return False
    return probe.returncode == 0


@dataclass(frozen=True)
class Topology:
    """How many of each service run (the scaling axis)."""

    api_workers: int = 1
    processors: int = 1
    relays: int = 1
    webhooks: int = 0

    @classmethod
    def parse(cls, spec: str, webhooks: int) -> "Topology":
        """`API_WORKERS:PROCESSORS:RELAYS[:WEBHOOKS]`, e.g. `2:1:1` or `1:2:1:2`; `webhooks`:
        the webhook services when the spec names none (0: the bench runs without them)."""
        api_workers, processors, relays, *rest = (int(part) for part in spec.split(":"))
        return cls(api_workers, processors, relays, rest[0] if rest and webhooks else webhooks)

    @classmethod
    def each_once(cls, specs: list[str], webhooks: int) -> list["Topology"]:
        """The topologies of `specs` in order, each once: without the webhook service (0),
        `1:1:1:2` is `1:1:1`."""
        return list(dict.fromkeys(cls.parse(spec, webhooks) for spec in specs))

    @property
    def label(self) -> str:
        label = f"api x{self.api_workers}, processor x{self.processors}, relay x{self.relays}"
        return label + (f", webhooks x{self.webhooks}" if self.webhooks else "")

    def services(self, database_urls: Mapping[str, str]) -> list[Service]:
        """Each service logs in with `database_urls[<its command>]` (its stage's own user)."""

        def env(command: str) -> dict[str, str]:
            url = database_urls.get(command)
            return {"PAYOUTS_DATABASE_URL": url} if url else {}

        services = [Service("api", ("api", "--workers", str(self.api_workers)), env("api"))]
        for kind, count in (
            ("processor", self.processors),
            ("outbox-relay", self.relays),
            ("webhooks", self.webhooks),
        ):
            services.extend(
                Service(f"{kind}-{number}", (kind,), env(kind)) for number in range(1, count + 1)
            )
        return services


@dataclass
class RunningSystem:
    base_url: str
    group: ServiceGroup | None  # None: a system someone else started (`--base-url`)

    def service_pids(self) -> dict[str, int]:
        if self.group is None:
            return {}
        return {name: process.pid for name, process in self.group.processes.items()}

    def stop(self) -> None:
        if self.group is not None:
            self.group.stop()


def start_system(
    infra: BenchInfrastructure, topology: Topology, log_dir: Path, database_urls: Mapping[str, str]
) -> RunningSystem:
    """`database_urls`: per `payouts` command, the database URL it runs with (default: the
    bench database's, as the bench's own user)."""
    port = free_port()
    env = environment(
        **infra.service_environment(),
        PAYOUTS_API_PORT=str(port),
        PAYOUTS_API_WORKERS=str(topology.api_workers),
        PAYOUTS_WEBHOOK_ALLOW_PRIVATE_URLS="true",
    )
    group = ServiceGroup(env=env, log_dir=log_dir)
    system = RunningSystem(f"http://127.0.0.1:{port}", group)
    try:
        for service in topology.services(database_urls):
            group.start(service)
    except BaseException:
        system.stop()
        raise
    return system


async def wait_until_ready(
    system: RunningSystem, infra: BenchInfrastructure, topology: Topology
) -> None:
    """The API is ready and every processor and webhook service consumes its queue."""
    expected = (
        {queue.name: topology.processors for queue in (PAYOUT_COMMANDS, BULK_PAYOUT_COMMANDS)}
        if system.group is not None
        else {}
    )
    if topology.webhooks and system.group is not None:
        for in_bulk in (False, True):
            queue = webhook_events_queue(retry_tiers=1, in_bulk=in_bulk)
            expected[queue.name] = topology.webhooks
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            if system.group is not None and system.group.exited():
                raise RuntimeError(f"a service exited during start-up: {system.group.exited()}")
            if await _api_ready(client, system.base_url) and await _consumers_attached(
                client, infra, expected
            ):
                return
            await asyncio.sleep(0.2)
    raise RuntimeError("the system did not become ready in time")


async def _api_ready(client: httpx.AsyncClient, base_url: str) -> bool:
    try:
        return (await client.get(f"{base_url}/api/v1/ready")).status_code == 200
    except httpx.HTTPError:
        return False


async def _consumers_attached(
    client: httpx.AsyncClient, infra: BenchInfrastructure, expected: dict[str, int]
) -> bool:
    parts = urlsplit(infra.management_url)
    base = urlunsplit(parts._replace(netloc=f"{parts.hostname}:{parts.port or 15672}"))
    auth = (parts.username or "guest", parts.password or "guest")
    for queue, consumers in expected.items():
        url = f"{base}/api/queues/{quote(infra.vhost, safe='')}/{quote(queue, safe='')}"
        try:
            response = await client.get(url, auth=auth)
        except httpx.HTTPError:
            return False
        if response.status_code != 200 or response.json().get("consumers", 0) < consumers:
            return False
    return True
