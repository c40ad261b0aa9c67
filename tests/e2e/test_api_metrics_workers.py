"""The API's /metrics as docker-compose.yml serves it: PAYOUTS_API_WORKERS=2 (the compose
default). Each scrape landed on one worker and saw only that worker's counters, so the counters
an operator alarms on (docs/operations.md, "What to watch") undercounted and went up and down
between scrapes (read by Prometheus as counter resets) (metrics review). And a worker that
uvicorn's supervisor cannot reach for a few seconds (a host whose CPU others take) is left to
serve: it was killed after 5 s (containers review)."""

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.system import running_api

REQUESTS = 40
SCRAPES = 12
ROOT = Path(__file__).resolve().parents[2]


def compose_api_workers() -> str:
    """The PAYOUTS_API_WORKERS docker-compose.yml gives the API (its default)."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    value = str(compose["services"]["api"]["environment"]["PAYOUTS_API_WORKERS"])
    found = re.fullmatch(r"\$\{PAYOUTS_API_WORKERS:-(\d+)\}", value)
    return found.group(1) if found else value


@pytest.fixture(scope="module")
def compose_like_api(
    service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    env = {**service_env, "PAYOUTS_API_WORKERS": compose_api_workers()}
    with running_api(env, tmp_path_factory.mktemp("api-workers")) as base_url:
        yield base_url


def health_requests_counted(exposition: str) -> float:
    for family in text_string_to_metric_families(exposition):
        if family.name != "payouts_api_requests":
            continue
        return sum(
            sample.value
            for sample in family.samples
            if sample.name == "payouts_api_requests_total"
            and sample.labels.get("route") == "/api/v1/health"
            and sample.labels.get("status") == "200"
        )
    return 0.0


async def test_every_scrape_of_the_compose_api_counts_every_request(
    compose_like_api: str,
) -> None:
    assert int(compose_api_workers()) > 1  # the shipped deployment runs several workers
    for _ in range(REQUESTS):
        # A fresh connection each: spread over the workers, as a load balancer's are.
        async with httpx.AsyncClient(base_url=compose_like_api, timeout=10) as one:
            assert (await one.get("/api/v1/health")).status_code == 200
    seen = []
    for _ in range(SCRAPES):  # as Prometheus scrapes: a connection each time
        async with httpx.AsyncClient(base_url=compose_like_api, timeout=10) as one:
            seen.append(health_requests_counted((await one.get("/metrics")).text))

    # All REQUESTS were answered before the first scrape: every scrape shows them all.
    assert all(count == REQUESTS for count in seen), seen


def api_workers(port: int) -> list[int]:
    """The pids of the workers of the API serving `port`: the processes started with its port
    whose parent (uvicorn's supervisor) was too, but multiprocessing's own helpers."""
    parent_of: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environment = (entry / "environ").read_bytes().split(b"\0")
            command = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        if (
            f"PAYOUTS_API_PORT={port}".encode() in environment
            and b"resource_tracker" not in command
        ):
            parent_of[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return sorted(pid for pid, parent in parent_of.items() if parent in parent_of)


async def test_a_worker_the_supervisor_cannot_reach_for_8_seconds_is_not_killed(
    compose_like_api: str,
) -> None:
    port = urlsplit(compose_like_api).port
    assert port is not None
    workers = api_workers(port)
    assert len(workers) == int(compose_api_workers()), workers
    os.kill(workers[0], signal.SIGSTOP)  # no CPU for it, as on a host whose CPU others take
    try:
        await asyncio.sleep(8)  # the starvation itself, past uvicorn's 5 s default
    finally:
        with contextlib.suppress(ProcessLookupError):  # killed by the supervisor meanwhile
            os.kill(workers[0], signal.SIGCONT)
    assert api_workers(port) == workers, "a worker was killed and replaced"
