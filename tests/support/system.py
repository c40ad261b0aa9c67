"""The real system as processes: API (uvicorn), outbox relay, processor, webhook service, on the
tests' own database and vhost; tests talk to it over HTTP like a merchant would."""

import socket
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cli.supervisor import Service, ServiceGroup

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

    def lines_naming(self, needles: Iterable[str]) -> str:
        """Every service's log lines that name one of `needles` (an event id, a payout id)."""
        wanted = tuple(needles)
        return "\n".join(
            f"{path.name}: {line}"
            for path in sorted(self.log_dir.glob("*.log"))
            for line in path.read_text().splitlines()
            if any(needle in line for needle in wanted)
        )


def _group(env: Mapping[str, str], log_dir: Path, api_port: int) -> ServiceGroup:
    return ServiceGroup(
        env={**env, "PAYOUTS_API_PORT": str(api_port), "PYTHONUNBUFFERED": "1"}, log_dir=log_dir
    )


@contextmanager
def running_api(env: Mapping[str, str], log_dir: Path) -> Iterator[str]:
    """The API alone, ready to serve: its base URL. Stopped afterwards."""
    port = free_port()
    group = _group(env, log_dir, port)
    base_url = f"http://127.0.0.1:{port}"
    try:
        group.start(API)
        group.wait_until_ready(base_url, within=START_TIMEOUT_SECONDS)
        yield base_url
    finally:
        group.stop()


@contextmanager
def running_system(env: Mapping[str, str], log_dir: Path) -> Iterator[RunningSystem]:
    """Every service started (logs in `log_dir`), ready to serve; all stopped afterwards."""
    port = free_port()
    group = _group(env, log_dir, port)
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
        # The relay, the processor and the webhook service serve their metrics once imported:
        # the API's /ready says nothing of them, and their start-up fell inside the first test's
        # deadline.
        for name, metrics_port in running.metrics_ports.items():
            metrics = f"http://127.0.0.1:{metrics_port}/metrics"
            group.wait_until_answered(metrics, name, START_TIMEOUT_SECONDS)
        yield running
    finally:
        group.stop()
