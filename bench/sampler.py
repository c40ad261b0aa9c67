"""Resident memory and CPU of every service (and of the database, the broker and the load
generator) once a second, from /proc: RSS flatness over a soak, where the cores went, and how
long each one waited for a core (a single-threaded service whose CPU and wait add up to about a
whole core was runnable all along: the cores were its limit)."""

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.processes import (
    children_by_parent,
    core_wait_seconds,
    cpu_seconds,
    pids_named,
    process_tree,
    rss_bytes,
)

SERVERS = {"mariadb": ("mariadbd", "mysqld"), "rabbitmq": ("beam.smp",)}


@dataclass(frozen=True)
class Sample:
    at: float  # wall clock
    rss: int  # bytes
    cpu: float  # cumulative CPU seconds
    core_wait: float  # cumulative seconds runnable but waiting for a core


# The bench's own processes among those sampled: not the system under test.
LOAD_GENERATOR = "load generator"
WEBHOOK_RECEIVER = "webhook receiver"
BENCH_PROCESSES = frozenset({LOAD_GENERATOR, WEBHOOK_RECEIVER})


@dataclass
class ResourceSampler:
    """`roots`: the processes to watch by name; each counts with its children (uvicorn workers)."""

    roots: Callable[[], Mapping[str, int]]
    interval: float = 1.0
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None

    def _groups(self) -> dict[str, list[int]]:
        children = children_by_parent()
        groups = {name: process_tree(pid, children) for name, pid in self.roots().items()}
        groups.update({name: pids_named(comms) for name, comms in SERVERS.items()})
        groups[LOAD_GENERATOR] = [os.getpid()]
        return groups

    def sample_now(self) -> None:
        now = time.time()
        for name, pids in self._groups().items():
            self.samples.setdefault(name, []).append(
                Sample(now, rss_bytes(pids), cpu_seconds(pids), core_wait_seconds(pids))
            )

    async def _run(self) -> None:
        while True:
            self.sample_now()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sample_now()

    def between(self, start: float, end: float) -> dict[str, list[Sample]]:
        return {
            name: [sample for sample in samples if start <= sample.at <= end]
            for name, samples in self.samples.items()
        }


def cpu_share(samples: Mapping[str, list[Sample]]) -> dict[str, float]:
    """Average CPU use of each process group over the samples, in percent of one core."""
    return _percent_of_one_core(samples, lambda sample: sample.cpu)


def core_wait_share(samples: Mapping[str, list[Sample]]) -> dict[str, float]:
    """How long each process group's threads waited for a core over the samples, in percent of
    the time (summed over threads: a database's many threads can pass 100)."""
    return _percent_of_one_core(samples, lambda sample: sample.core_wait)


def _percent_of_one_core(
    samples: Mapping[str, list[Sample]], seconds: Callable[[Sample], float]
) -> dict[str, float]:
    shares = {}
    for name, series in samples.items():
        if len(series) >= 2 and series[-1].at > series[0].at:
            first, last = series[0], series[-1]
            shares[name] = 100 * (seconds(last) - seconds(first)) / (last.at - first.at)
    return shares


def rss_drift(series: list[Sample], edge_fraction: float = 0.2) -> dict[str, Any] | None:
    """Mean RSS of the first and of the last `edge_fraction` of the samples, and the change."""
    if len(series) < 4:
        return None
    edge = max(int(len(series) * edge_fraction), 1)
    first = sum(sample.rss for sample in series[:edge]) / edge
    last = sum(sample.rss for sample in series[-edge:]) / edge
    return {
        "startMiB": first / 2**20,
        "endMiB": last / 2**20,
        "maxMiB": max(sample.rss for sample in series) / 2**20,
        "change": (last - first) / first if first else 0.0,
        "samples": len(series),
    }
