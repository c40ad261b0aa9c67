"""`make bench` / `python -m bench.run`: the whole benchmark, end to end.

1. Recreate the bench database and vhost (never `payouts` or a test's).
2. The floor: the create request's SQL on plain asyncmy, RabbitMQ round trips with confirms, a
   trivial FastAPI endpoint, each at the same concurrency as the system's run.
3. For each topology (API workers : processors : relays [: webhook services]), start the
   system (each service as its own MySQL user, so the server counts statements per stage), drive
   payout creates through the HTTP API with a real webhook receiver, wait for every payout and
   webhook, and run `reconcile`. The first topology (the baseline) also runs the peak's clients on
   one merchant (hot merchant), at half its max sustained throughput (latency), a soak at that
   rate (memory) and a payroll through the batch endpoint.
4. Write bench/results/bench-<time>.{md,json,png}. Exit 1 on any error (non-2xx, lost payout,
   missing webhook); with --strict also when a target is missed (the quiet-machine latency
   target only counts when CPU steal stayed at or under 10 %).
"""

import argparse
import asyncio
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
from bench.batch import BATCH_PATH, BatchNotAvailable, send_payroll
from bench.infrastructure import BenchInfrastructure, create_merchants, forget_all_data
from bench.load import CreateResult, PayoutRequests, Target, closed_loop, open_loop
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
from bench.sampler import WEBHOOK_RECEIVER, ResourceSampler
from bench.stages import (
    StatementCounts,
    create_stage_users,
    read_stage_counts,
    stage_database_urls,
)
from bench.steal import CpuTimes, steal_share
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
# After the drain, for the webhook service's last delivery records (written once the receiver
# answered) to reach the per-stage counters.
COUNTER_SETTLE_SECONDS = 0.5


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
        "--batch-payouts",
        type=int,
        default=5000,
        help="payouts of the payroll sent through POST /payouts/batch (0: no batch phase)",
    )
    add("--batch-chunk", type=int, default=1000, help="payouts per batch request")
    add(
        "--batch-timeout",
        type=float,
        default=120,
        help="max seconds to wait for the payroll's payouts and webhooks after the last answer",
    )
    add(
        "--topologies",
        default="1:1:1,2:1:1,1:2:2,1:1:1:2",
        help="API_WORKERS:PROCESSORS:RELAYS[:WEBHOOKS] list; the first is the baseline (add "
        "2:2:2 for both)",
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
    args = parser.parse_args(argv)
    # A warm-up as long as its phase left no window: every rate unmeasured, and --strict passed.
    if args.warmup >= args.duration:
        parser.error("--warmup must be shorter than --duration")
    if 0 < args.half_duration <= args.warmup:
        parser.error("--warmup must be shorter than --half-duration")
    if 0 < args.soak <= args.warmup:
        parser.error("--warmup must be shorter than --soak")
    return args


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
    database_urls: dict[str, str]  # per `payouts` command, its stage's user; empty: not ours


async def stage_counts(bench: Bench) -> dict[str, StatementCounts]:
    """Per stage; nothing for a system the bench did not start with its own users."""
    if not bench.database_urls:
        return {}
    return await read_stage_counts(bench.engine, bench.args.database)


async def offer_load(
    spec: PhaseSpec, base_url: str, requests: PayoutRequests
) -> list[CreateResult]:
    if spec.kind is LoadKind.CLOSED:
        return await closed_loop(
            Target.of(base_url), requests, concurrency=spec.concurrency, duration=spec.duration
        )
    if spec.kind is LoadKind.OPEN:
        return await open_loop(
            Target.of(base_url), requests, rate=spec.rate, duration=spec.duration
        )
    return await send_payroll(
        Target.of(base_url, BATCH_PATH), requests, payouts=spec.payouts, chunk=spec.chunk
    )


async def run_phase(
    bench: Bench,
    system: RunningSystem,
    sampler: ResourceSampler,
    spec: PhaseSpec,
    *,
    tag: str,
    profile: bool,
) -> PhaseData:
    requests = PayoutRequests(bench.api_keys[: spec.merchants or None], run_tag=tag)
    recordings = []
    if profile:
        pids = system.service_pids()
        recordings = [
            profiling.record(name, pids[name], spec.duration, bench.work_dir / "profiles")
            for name in ("api", "processor-1", "outbox-relay-1", "webhooks-1")
            if name in pids
        ]
    lock_waits = LockWaitSampler(bench.engine, bench.args.database) if profile else None
    if lock_waits is not None:
        lock_waits.start()
    counters, stages = await database_counters(bench.engine), await stage_counts(bench)
    cpu = CpuTimes.now()
    started = time.time()
    creates = await offer_load(spec, system.base_url, requests)
    ended = time.time()
    waits = await lock_waits.stop() if lock_waits is not None else []
    webhook_receiver = bench.receiver if bench.webhooks else None
    limit = bench.args.batch_timeout if spec.kind is LoadKind.BATCH else bench.args.drain_timeout
    drained = await drain(bench.engine, webhook_receiver, started, limit)
    await asyncio.sleep(COUNTER_SETTLE_SECONDS)
    counted, staged = await database_counters(bench.engine), await stage_counts(bench)
    steal = steal_share(cpu, CpuTimes.now())
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
        statements={name: staged[name] - stages[name] for name in staged},
        steal=steal,
        exited=system.group.exited() if system.group is not None else {},
        lock_waits=waits,
    )


def peak_phase(args: argparse.Namespace, *, hot: bool = False) -> PhaseSpec:
    """The max-throughput phase: its clients take every merchant in turn, or (`hot`) one."""
    if hot:
        name, role, merchants = f"one hot merchant, {args.concurrency} clients", "hot", 1
    else:
        name, role = f"max throughput, {args.concurrency} clients", "peak"
        merchants = args.merchants
    return PhaseSpec(
        name,
        role,
        LoadKind.CLOSED,
        args.duration,
        args.warmup,
        concurrency=args.concurrency,
        merchants=merchants,
    )


def batch_phase(args: argparse.Namespace) -> PhaseSpec:
    return PhaseSpec(
        f"payroll of {args.batch_payouts:,} through the batch endpoint",
        "batch",
        LoadKind.BATCH,
        0.0,
        0.0,
        merchants=1,
        payouts=args.batch_payouts,
        chunk=args.batch_chunk,
    )


def half_rate(args: argparse.Namespace, peak: dict[str, Any]) -> float:
    if args.rate:
        return float(args.rate)
    sustained = float(peak["endToEndPerSecond"])
    # Nothing settled in the window (NaN: no window; 0: none done in it): fall back on what was
    # created. At 0 the latency phase ran at 1 create/s and judged [5] "at half of peak".
    if math.isnan(sustained) or sustained <= 0:
        sustained = float(peak["createsPerSecond"])
    return max(sustained / 2, 1.0)


async def run_topology(bench: Bench, index: int, topology: Topology) -> dict[str, Any]:
    args = bench.args
    print(f"\n== {args.base_url or topology.label}", flush=True)
    log_dir = bench.work_dir / f"logs-{index}"
    if args.base_url:
        system = RunningSystem(args.base_url, None)
    else:
        system = start_system(bench.infra, topology, log_dir, bench.database_urls)
    sampler = ResourceSampler(
        lambda: {**system.service_pids(), WEBHOOK_RECEIVER: bench.receiver_pid}
    )
    phases: list[PhaseData] = []
    summaries: list[dict[str, Any]] = []
    unmeasured: list[dict[str, str]] = []
    try:
        await wait_until_ready(system, bench.infra, topology)
        sampler.start()
        specs = [peak_phase(args)]
        while specs:
            spec = specs.pop(0)
            try:
                data = await run_phase(
                    bench,
                    system,
                    sampler,
                    spec,
                    tag=f"{index}-{len(phases) + len(unmeasured)}-{bench.stamp}",
                    profile=args.profile and index == 0 and spec.role == "peak",
                )
            except BatchNotAvailable as absent:
                unmeasured.append({"role": spec.role, "name": spec.name, "reason": str(absent)})
                print(f"   {spec.name}: {absent}", flush=True)
                continue
            phases.append(data)
            summaries.append(summarize(data))
            _print_phase(summaries[-1])
            if index == 0 and spec.role == "peak":
                specs.extend(baseline_phases(args, summaries[-1]))
    finally:
        await sampler.stop()
        system.stop()
    reconcile = await reconcile_database(bench.system_database)
    print(f"   reconcile: {'n/a' if reconcile is None else reconcile or 'clean'}", flush=True)
    return {
        "topology": topology.__dict__,
        "label": f"running system at {args.base_url}" if args.base_url else topology.label,
        "phases": summaries,
        "unmeasured": unmeasured,
        "timelines": [timeline(data) for data in phases] if index == 0 else [],
        "reconcile": reconcile,
        "logs": str(log_dir),
    }


def baseline_phases(args: argparse.Namespace, peak: dict[str, Any]) -> list[PhaseSpec]:
    """After the baseline's peak: the hot merchant (same load, one merchant), latency and memory
    at half the peak, and last the payroll (its backlog must not reach the other phases)."""
    rate = half_rate(args, peak)
    phases = [peak_phase(args, hot=True)]
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
    if args.batch_payouts > 0:
        phases.append(batch_phase(args))
    return phases


def _print_phase(summary: dict[str, Any]) -> None:
    latency = summary["createLatencyMs"]
    line = (
        f"   {summary['name']} ({summary['load']}): {summary['createsPerSecond']:.1f} creates/s, "
        f"create p50 {latency['p50']:.2f} p99 {latency['p99']:.2f} ms, created→final p99 "
        f"{summary['createdToFinalMs']['p99']:.2f} ms, end-to-end "
        f"{summary['endToEndPerSecond']:.1f}/s"
    )
    if summary["webhooks"]:
        line += f", created→webhook p99 {summary['createdToWebhookMs']['p99']:.2f} ms"
    total = summary["statementsPerPayout"].get("total")
    if total:
        line += (
            f", {total['statements']:.2f} statements and {total['commits']:.2f} commits per payout"
        )
    if "batch" in summary:
        batch = summary["batch"]
        line += f", batch wall {batch['wallS']} s, last done at {batch['toLastEndToEndS']} s"
    print(f"{line}, CPU steal {summary['stealShare']:.0%}", flush=True)
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


async def main(
    args: argparse.Namespace, infra: BenchInfrastructure, began: float, cpu_at_start: CpuTimes
) -> int:
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
    if not args.base_url:
        await create_stage_users(infra.database_url)
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
            {} if args.base_url else stage_database_urls(infra.database_url),
        )
        specs = args.topologies.split(",")[:1] if args.base_url else args.topologies.split(",")
        runs = [
            await run_topology(bench, index, topology)
            for index, topology in enumerate(Topology.each_once(specs, 1 if webhooks else 0))
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
        "stealShare": steal_share(cpu_at_start, CpuTimes.now()),
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
    began, cpu_at_start = time.monotonic(), CpuTimes.now()
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
    sys.exit(uvloop.run(main(args, infra, began, cpu_at_start)))


if __name__ == "__main__":
    cli()
