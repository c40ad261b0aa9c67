"""`make bench` / `python -m bench.run`: the whole benchmark, end to end.

1. Recreate the bench database and vhost (never `payouts` or a test's).
2. The floor: the create request's SQL on plain asyncmy, RabbitMQ round trips with confirms, a
   trivial FastAPI endpoint, each at the same concurrency as the system's run.
3. For each topology (API workers : processors : relays), start the system, drive payout creates
   through the HTTP API with a real webhook receiver, wait for every payout and webhook, and run
   `reconcile`. The first topology (the baseline) also runs at half its max sustained throughput
   (latency) and then soaks at that rate (memory).
4. Write bench/results/bench-<time>.{md,json,png}. Exit 1 on any error (non-2xx, lost payout,
   missing webhook); with --strict also when a target is missed.
"""

import argparse
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop
from sqlalchemy.ext.asyncio import AsyncEngine

from bench import floor, profiling
from bench.infrastructure import BenchInfrastructure, create_merchants, forget_all_data
from bench.load import PayoutRequests, Target, closed_loop, open_loop
from bench.locks import LockWaitSampler
from bench.observe import (
    Receiver,
    database_counters,
    drain,
    outbox_rows_sent,
    payout_outcomes,
    recorded_event_ids,
)
from bench.phase import LoadKind, PhaseData, PhaseSpec, summarize, timeline
from bench.processes import BackgroundProcess
from bench.reconciliation import reconcile_database
from bench.report import write_report
from bench.sampler import ResourceSampler
from bench.system import (
    RunningSystem,
    Topology,
    start_system,
    wait_until_ready,
    webhook_service_available,
)
from bench.targets import as_json, judge
from contracts.db.engine import create_engine
from tests.support.system import free_port

LONG_SOAK_SECONDS = 300.0


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--concurrency", type=int, default=16, help="clients of the max-throughput phase")
    add("--merchants", type=int, default=16, help="merchants the clients take in turn")
    add("--duration", type=float, default=10, help="seconds of max-throughput load per topology")
    add("--warmup", type=float, default=2, help="seconds at the start of a phase left out")
    add("--half-duration", type=float, default=15, help="seconds at half max throughput (0: none)")
    add(
        "--rate",
        type=float,
        default=None,
        help="offered creates/s of the latency phase "
        "[default: half the baseline's max sustained end-to-end throughput]",
    )
    add("--soak", type=float, default=30, help="seconds of the memory soak (0: none)")
    add("--long-soak", action="store_true", help=f"soak {LONG_SOAK_SECONDS:.0f} s")
    add("--floor-duration", type=float, default=4, help="seconds per floor measurement (0: none)")
    add("--drain-timeout", type=float, default=60, help="max seconds to wait for stragglers")
    add(
        "--topologies",
        default="1:1:1,2:1:1,1:2:2",
        help="API_WORKERS:PROCESSORS:RELAYS list; the first is the baseline (add 2:2:2 for both)",
    )
    add(
        "--webhooks",
        choices=("auto", "on", "off"),
        default="auto",
        help="run the webhook service (auto: when `payouts webhooks --help` works)",
    )
    add(
        "--base-url",
        default=None,
        help="drive an already running system (its database from "
        "PAYOUTS_DATABASE_URL; one topology, no memory figures)",
    )
    add(
        "--profile",
        action="store_true",
        help="py-spy the API, a processor and the webhook service during the baseline's "
        "max-throughput phase",
    )
    add("--database", default="payouts_bench")
    add("--vhost", default="payouts_bench")
    add("--output-dir", type=Path, default=Path("bench/results"))
    add("--strict", action="store_true", help="exit 1 when a target is missed")
    return parser.parse_args(argv)


@dataclass
class Bench:
    """What every phase needs."""

    args: argparse.Namespace
    infra: BenchInfrastructure
    system_database: str  # the bench's own, or a running system's (--base-url)
    engine: AsyncEngine
    receiver: Receiver
    receiver_pid: int
    api_keys: list[str]
    webhooks: bool
    work_dir: Path
    stamp: str


async def run_phase(
    bench: Bench,
    system: RunningSystem,
    sampler: ResourceSampler,
    spec: PhaseSpec,
    *,
    tag: str,
    profile: bool,
) -> PhaseData:
    requests = PayoutRequests(bench.api_keys, run_tag=tag)
    target = Target.of(system.base_url)
    recordings = []
    if profile:
        pids = system.service_pids()
        recordings = [
            profiling.record(name, pids[name], spec.duration, bench.work_dir / "profiles")
            for name in ("api", "processor-1", "webhooks-1")
            if name in pids
        ]
    lock_waits = LockWaitSampler(bench.engine, bench.args.database) if profile else None
    if lock_waits is not None:
        lock_waits.start()
    counters = await database_counters(bench.engine)
    started = time.time()
    if spec.kind is LoadKind.CLOSED:
        creates = await closed_loop(
            target, requests, concurrency=spec.concurrency, duration=spec.duration
        )
    else:
        creates = await open_loop(target, requests, rate=spec.rate, duration=spec.duration)
    ended = time.time()
    waits = await lock_waits.stop() if lock_waits is not None else []
    webhook_receiver = bench.receiver if bench.webhooks else None
    drained = await drain(bench.engine, webhook_receiver, started, bench.args.drain_timeout)
    counted = await database_counters(bench.engine)
    for recording in recordings:
        recording.wait()
    receipts, malformed = await bench.receiver.take()
    return PhaseData(
        spec=spec,
        started_at=started,
        ended_at=ended,
        drain_seconds=drained,
        creates=creates,
        outcomes=await payout_outcomes(bench.engine, started),
        receipts=receipts,
        malformed_webhooks=malformed,
        expected_events=await recorded_event_ids(bench.engine, started)
        if bench.webhooks
        else set(),
        outbox_sent_in_window=await outbox_rows_sent(bench.engine, started + spec.warmup, ended),
        webhooks=bench.webhooks,
        resources=sampler.between(started + spec.warmup, ended),
        database={name: counted[name] - counters.get(name, 0) for name in counted},
        exited=system.group.exited() if system.group is not None else {},
        lock_waits=waits,
    )


def peak_phase(args: argparse.Namespace) -> PhaseSpec:
    return PhaseSpec(
        f"max throughput, {args.concurrency} clients",
        "peak",
        LoadKind.CLOSED,
        args.duration,
        args.warmup,
        concurrency=args.concurrency,
    )


def half_rate(args: argparse.Namespace, peak: dict[str, Any]) -> float:
    if args.rate:
        return float(args.rate)
    sustained = float(peak["endToEndPerSecond"])
    if math.isnan(sustained):  # nothing settled in the window: fall back on what was created
        sustained = float(peak["createsPerSecond"])
    return max(sustained / 2, 1.0)


async def run_topology(bench: Bench, index: int, topology: Topology) -> dict[str, Any]:
    args = bench.args
    print(f"\n== {args.base_url or topology.label}", flush=True)
    log_dir = bench.work_dir / f"logs-{index}"
    if args.base_url:
        system = RunningSystem(args.base_url, None)
    else:
        system = start_system(bench.infra, topology, log_dir, {})
    sampler = ResourceSampler(
        lambda: {**system.service_pids(), "webhook receiver": bench.receiver_pid}
    )
    phases: list[PhaseData] = []
    summaries: list[dict[str, Any]] = []
    try:
        await wait_until_ready(system, bench.infra, topology)
        sampler.start()
        specs = [peak_phase(args)]
        while specs:
            spec = specs.pop(0)
            data = await run_phase(
                bench,
                system,
                sampler,
                spec,
                tag=f"{index}-{len(phases)}-{bench.stamp}",
                profile=args.profile and index == 0 and spec.role == "peak",
            )
            phases.append(data)
            summaries.append(summarize(data))
            _print_phase(summaries[-1])
            if index == 0 and spec.role == "peak":
                specs.extend(latency_and_soak_phases(args, summaries[-1]))
    finally:
        await sampler.stop()
        system.stop()
    reconcile = await reconcile_database(bench.system_database)
    print(f"   reconcile: {'n/a' if reconcile is None else reconcile or 'clean'}", flush=True)
    return {
        "topology": topology.__dict__,
        "label": f"running system at {args.base_url}" if args.base_url else topology.label,
        "phases": summaries,
        "timelines": [timeline(data) for data in phases] if index == 0 else [],
        "reconcile": reconcile,
        "logs": str(log_dir),
    }


def latency_and_soak_phases(args: argparse.Namespace, peak: dict[str, Any]) -> list[PhaseSpec]:
    rate = half_rate(args, peak)
    phases = []
    if args.half_duration > 0:
        phases.append(
            PhaseSpec(
                "latency at half max throughput",
                "half",
                LoadKind.OPEN,
                args.half_duration,
                args.warmup,
                rate=rate,
            )
        )
    soak = LONG_SOAK_SECONDS if args.long_soak else args.soak
    if soak > 0 and not args.base_url:
        phases.append(
            PhaseSpec(
                "memory soak at half max throughput",
                "soak",
                LoadKind.OPEN,
                soak,
                args.warmup,
                rate=rate,
                watch_memory=True,
            )
        )
    return phases


def _print_phase(summary: dict[str, Any]) -> None:
    latency = summary["createLatencyMs"]
    line = (
        f"   {summary['name']} ({summary['load']}): {summary['createsPerSecond']} creates/s, "
        f"create p50 {latency['p50']} p99 {latency['p99']} ms, created→final p99 "
        f"{summary['createdToFinalMs']['p99']} ms, end-to-end {summary['endToEndPerSecond']}/s"
    )
    if summary["webhooks"]:
        line += f", created→webhook p99 {summary['createdToWebhookMs']['p99']} ms"
    print(line, flush=True)
    for problem in summary["problems"]:
        print(f"   PROBLEM: {problem}", flush=True)


async def measure_floor(
    args: argparse.Namespace, infra: BenchInfrastructure, work_dir: Path
) -> dict[str, Any]:
    if args.floor_duration <= 0:
        return {}
    print("== floor", flush=True)
    merchants = await create_merchants(infra.database_url, args.merchants, None)
    results = {
        "createTransaction": await floor.create_transaction_floor(
            infra.database_url,
            merchants,
            concurrency=args.concurrency,
            duration=args.floor_duration,
        ),
        "broker": await floor.broker_floor(
            infra.amqp_url, concurrency=args.concurrency, duration=args.floor_duration
        ),
        "http": await floor.http_floor(
            sys.executable,
            concurrency=args.concurrency,
            duration=args.floor_duration,
            log_path=work_dir / "trivial-app.log",
        ),
    }
    await forget_all_data(infra.database_url)  # the floor's payouts must not reach the system
    for result in results.values():
        print(
            f"   {result.name}: {result.per_second:.0f} {result.unit}, p50 "
            f"{result.latency.p50:.1f} ms, p99 {result.latency.p99:.1f} ms",
            flush=True,
        )
    return {name: result.as_json() for name, result in results.items()}


def git_revision() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


async def main(args: argparse.Namespace, infra: BenchInfrastructure, began: float) -> int:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    work_dir = Path(".run/bench") / stamp
    work_dir.mkdir(parents=True, exist_ok=True)
    print(f"logs in {work_dir}", flush=True)
    floor_results = await measure_floor(args, infra, work_dir)

    webhooks = {"on": True, "off": False}.get(args.webhooks)
    if webhooks is None:
        webhooks = webhook_service_available()
    print(f"webhook service: {'on' if webhooks else 'off (not in this checkout)'}", flush=True)
    port = free_port()
    receiver_process = BackgroundProcess.start(
        [sys.executable, "-m", "bench.receiver", "--port", str(port)], work_dir / "receiver.log"
    )
    system_database = os.environ["PAYOUTS_DATABASE_URL"] if args.base_url else infra.database_url
    engine = create_engine(system_database, pool_size=2)
    receiver = Receiver(f"http://127.0.0.1:{port}")
    try:
        await receiver_process.wait_for_port(port)
        merchants = await create_merchants(
            system_database, args.merchants, f"http://127.0.0.1:{port}/webhooks"
        )
        await receiver.add_secrets({m.merchant_id: m.webhook_secret for m in merchants})
        bench = Bench(
            args,
            infra,
            system_database,
            engine,
            receiver,
            receiver_process.process.pid,
            [m.api_key for m in merchants],
            webhooks,
            work_dir,
            stamp,
        )
        specs = args.topologies.split(",")[:1] if args.base_url else args.topologies.split(",")
        runs = [
            await run_topology(bench, index, Topology.parse(spec, 1 if webhooks else 0))
            for index, spec in enumerate(specs)
        ]
    finally:
        await receiver.close()
        receiver_process.stop()
        await engine.dispose()

    report: dict[str, Any] = {
        "startedAt": stamp,
        "revision": git_revision(),
        "cores": os.cpu_count(),
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "command": " ".join(["python -m bench.run", *sys.argv[1:]]),
        "webhooks": webhooks,
        "floor": floor_results,
        "runs": runs,
        "workDir": str(work_dir),
        "elapsedS": time.monotonic() - began,
    }
    if args.profile:
        report["profiles"] = {
            path.name.removesuffix(".collapsed.txt"): profiling.summarize(path)
            for path in sorted((work_dir / "profiles").glob("*.collapsed.txt"))
        }
    verdicts = judge(report)
    report["targets"] = as_json(verdicts)
    paths = write_report(report, args.output_dir)
    print(
        "\n"
        + "\n".join(
            f"{'MET' if v.met else 'n/a' if v.met is None else 'MISSED':>6}  "
            f"{v.target}: {v.measured}"
            for v in verdicts
        )
    )
    print(f"\nreport: {', '.join(str(path) for path in paths)}")
    failed = any(not v.met for v in verdicts if v.target.startswith("no non-2xx"))
    missed = any(v.met is False for v in verdicts)
    return 1 if failed or (args.strict and missed) else 0


def cli() -> None:
    began = time.monotonic()
    args = parse_arguments()
    infra = BenchInfrastructure.from_environment(args.database, args.vhost)
    if args.base_url and "PAYOUTS_DATABASE_URL" not in os.environ:
        sys.exit("--base-url needs PAYOUTS_DATABASE_URL: the running system's database")
    if args.base_url and infra.database_url == os.environ["PAYOUTS_DATABASE_URL"]:
        if args.floor_duration > 0:
            sys.exit("the running system uses the bench database: pass --floor-duration 0")
    else:
        print(f"bench database {args.database}, vhost {args.vhost}: recreating", flush=True)
        infra.recreate()  # before the event loop: the migration runs one of its own
    sys.exit(uvloop.run(main(args, infra, began)))


if __name__ == "__main__":
    cli()
