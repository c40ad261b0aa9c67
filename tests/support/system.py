"""The real system as processes: API (uvicorn), outbox relay, processor, webhook service, on the
tests' own database and vhost; tests talk to it over HTTP like a merchant would."""

import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from cli.supervisor import Service, ServiceGroup, StartupFailed

API = Service("api", ("api",))
RELAY = Service("outbox-relay", ("outbox-relay",))
PROCESSOR = Service("processor", ("processor",))
WEBHOOKS = Service("webhooks", ("webhooks",))
START_TIMEOUT_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RunningSystem:
    base_url: str
    group: ServiceGroup
    log_dir: Path
    metrics_ports: dict[str, int]  # the non-HTTP services' /metrics

    def restart(self, service: Service) -> None:
        """SIGKILL it (a crash, at whatever point it was) and start it again."""
        self.group.kill(service.name)
        self.group.start(self.with_metrics(service))

    def with_metrics(self, service: Service) -> Service:
        port = self.metrics_ports.get(service.name)
        if port is None:
            return service
        return Service(service.name, service.args, {"PAYOUTS_METRICS_PORT": str(port)})

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text()[-3000:]}" for path in self.log_dir.glob("*.log")
        )


@contextmanager
def running_system(env: Mapping[str, str], log_dir: Path) -> Iterator[RunningSystem]:
    """Every service started (logs in `log_dir`), ready to serve; all stopped afterwards."""
    port = free_port()
    group = ServiceGroup(
        env={**env, "PAYOUTS_API_PORT": str(port), "PYTHONUNBUFFERED": "1"}, log_dir=log_dir
    )
    running = RunningSystem(
        base_url=f"http://127.0.0.1:{port}",
        group=group,
        log_dir=log_dir,
        metrics_ports={service.name: free_port() for service in (RELAY, PROCESSOR, WEBHOOKS)},
    )
    try:
        for service in (API, RELAY, PROCESSOR, WEBHOOKS):
            group.start(running.with_metrics(service))
        group.wait_until_ready(running.base_url, within=START_TIMEOUT_SECONDS)
        wait_until_serving_metrics(running, within=START_TIMEOUT_SECONDS)
        yield running
    finally:
        group.stop()


def wait_until_serving_metrics(running: RunningSystem, *, within: float) -> None:
    """Until the relay, the processor and the webhook service each answer on their metrics port,
    which each serves once imported: the API's /ready says nothing of them, and their start-up
    fell inside the first test's deadline."""
    deadline = time.monotonic() + within
    for name, port in running.metrics_ports.items():
        while not _answers(f"http://127.0.0.1:{port}/metrics"):
            if running.group.exited():
                raise StartupFailed(f"a service exited during start-up: {running.group.exited()}")
            if time.monotonic() >= deadline:
                raise StartupFailed(f"{name} served no metrics within {within:.0f}s")
            time.sleep(0.2)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
