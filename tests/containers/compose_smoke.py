"""`make compose-smoke`: the whole system from docker-compose.yml, driven from the host like a
merchant and an operator would, then torn down.

It proves that the compose file, the Dockerfile, the images' entrypoints, the healthchecks and
the environment wiring agree:

1. build the image and `up -d` every service (as the README's plain `up` does) under a project
   name of its own, on free host ports (the local MariaDB/RabbitMQ/API keep 3306, 5672, 15672,
   8000);
2. /api/v1/ready answers 200 on the published API port;
3. the seed job ran, and running it again reuses the demo merchant;
4. one payout of each test scenario, created over HTTP, reaches its outcome;
5. the webhook sink received each payout's events, every signature verified with the demo
   merchant's secret;
6. the RabbitMQ management API, on its published port, shows the preloaded topology with
   consumers on the work queues;
7. compose reports the relay, the processor, the webhook service and the sink healthy (their
   heartbeats, contracts/heartbeat.py);

and always `down -v` at the end, whatever happened (also on Ctrl-C or SIGTERM). Every wait polls
against a deadline. Run: `.venv/bin/python -m tests.containers.compose_smoke`.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import httpx

from contracts.api_keys import new_api_key

ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS = ROOT / "deploy" / "rabbitmq" / "definitions.json"
OPERATOR = ("operator", "operator")  # deploy/rabbitmq/definitions.json, docs/operations.md

UP_SECONDS = 900  # an uncached build of the app image included
READY_SECONDS = 120
OUTCOME_SECONDS = 120
CONSUMER_SECONDS = 30  # the management API emits queue stats every 5 s by default
# A healthcheck every 10 s (docker-compose.yml's x-heartbeat-healthcheck), three failed in a row
# to turn unhealthy.
HEALTHY_SECONDS = 60
HEARTBEAT_SERVICES = ("outbox-relay", "processor", "webhooks", "webhook-sink")
HEALTH_FORMAT = "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}"
T = TypeVar("T")


class SmokeFailure(Exception):
    """A check failed: the message says which and what was seen."""


@dataclass(frozen=True)
class Scenario:
    name: str
    account: str
    amount: str
    status: str  # the payout's status once the processor is done with it
    event: str  # the webhook event of that status


SCENARIOS = (  # README "Test scenarios"
    Scenario("0001 succeeds", "03001230001", "1500.00", "SUCCESS", "payout.succeeded"),
    Scenario(
        "0002 retries, then succeeds", "03001230002", "1500.00", "SUCCESS", "payout.succeeded"
    ),
    Scenario("0003 fails", "03001230003", "1500.00", "FAILED", "payout.failed"),
    Scenario("0004 pending at the PSP", "03001230004", "1500.00", "PENDING", "payout.pending"),
    Scenario("0005 on hold", "03001230005", "1500.00", "ON_HOLD", "payout.on_hold"),
    Scenario(
        "100,000 or more: review", "03001239999", "150000.00", "IN_REVIEW", "payout.in_review"
    ),
    Scenario("anything else succeeds", "03001239999", "1500.00", "SUCCESS", "payout.succeeded"),
)


def log(message: str) -> None:
    print(f"[compose-smoke] {message}", flush=True)


def poll(what: str, seconds: float, attempt: Callable[[], T | None], every: float = 1.0) -> T:
    """attempt() until it returns something other than None; SmokeFailure after the deadline."""
    deadline = time.monotonic() + seconds
    while True:
        result = attempt()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise SmokeFailure(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def compose_program() -> list[str]:
    """`docker compose` (the plugin) when there is one, else the standalone docker-compose."""
    plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if plugin.returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise SmokeFailure("neither `docker compose` nor `docker-compose` is installed")


class Compose:
    def __init__(self, project: str, env: dict[str, str]) -> None:
        self.command = [*compose_program(), "--project-name", project]
        self.env = env

    def run(self, *args: str, timeout: float = 120, capture: bool = False) -> str:
        completed = subprocess.run(
            [*self.command, *args],
            cwd=ROOT,
            env=self.env,
            timeout=timeout,
            check=False,
            text=True,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.STDOUT if capture else None,
        )
        if completed.returncode != 0:
            shown = f":\n{completed.stdout[-3000:]}" if capture else " (output above)"
            raise SmokeFailure(f"`compose {' '.join(args)}` exited {completed.returncode}{shown}")
        return completed.stdout or ""

    def logs(self, service: str) -> list[str]:
        return self.run("logs", "--no-color", service, capture=True).splitlines()

    def health(self, service: str) -> list[str]:
        """The health docker reports of each of `service`'s containers ("none": no check)."""
        ids = subprocess.run(
            [*self.command, "ps", "-q", service],
            cwd=ROOT,
            env=self.env,
            timeout=60,
            check=True,
            text=True,
            capture_output=True,  # compose's warnings on stderr are not container ids
        ).stdout.split()
        if not ids:
            return []
        inspected = subprocess.run(
            ["docker", "inspect", "--format", HEALTH_FORMAT, *ids],
            timeout=60,
            check=True,
            text=True,
            capture_output=True,
        )
        return inspected.stdout.split()


def json_lines(lines: Sequence[str]) -> list[dict[str, Any]]:
    """The JSON objects printed in a service's log (after compose's `service  | ` prefix)."""
    found = []
    for line in lines:
        text = line.split("| ", 1)[-1].strip()
        if text.startswith("{"):
            try:
                found.append(json.loads(text))
            except json.JSONDecodeError:
                continue
    return found


def wait_until_ready(api: str) -> None:
    def ready() -> bool | None:
        try:
            return True if httpx.get(f"{api}/ready", timeout=5).status_code == 200 else None
        except httpx.TransportError:
            return None

    poll(f"{api}/ready to answer 200", READY_SECONDS, ready)


def check_seed_is_idempotent(compose: Compose) -> str:
    """The seed of `up` made the demo merchant; a second run must reuse it. Its merchant id."""
    printed = [line for line in json_lines(compose.logs("seed")) if "merchantId" in line]
    first = printed[0] if printed else {}
    if not first.get("created"):
        raise SmokeFailure(f"the seed job of `up` printed no new demo merchant: {first}")
    again_output = compose.run("run", "--rm", "--no-deps", "-T", "seed", capture=True)
    again = json_lines(again_output.splitlines())
    if not again or again[-1].get("merchantId") != first["merchantId"] or again[-1]["created"]:
        raise SmokeFailure(f"a second seed did not reuse {first['merchantId']}: {again_output}")
    merchant_id: str = first["merchantId"]
    return merchant_id


def create_payouts(client: httpx.Client) -> dict[str, Scenario]:
    created = {}
    for scenario in SCENARIOS:
        body = {
            "merchantReference": f"smoke-{uuid.uuid4().hex[:12]}",
            "amount": scenario.amount,
            "destType": "WALLET",
            "walletCode": "JAZZCASH",
            "accountNumber": scenario.account,
        }
        response = client.post(
            "/payouts", json=body, headers={"X-IDEMPOTENCY-KEY": str(uuid.uuid4())}
        )
        if response.status_code != 201:
            raise SmokeFailure(
                f"{scenario.name}: POST /payouts {response.status_code}: {response.text}"
            )
        created[response.json()["data"]["id"]] = scenario
    return created


def wait_for_outcomes(client: httpx.Client, payouts: dict[str, Scenario]) -> None:
    def payout(payout_id: str) -> dict[str, Any]:
        response = client.get(f"/payouts/{payout_id}")
        response.raise_for_status()
        data: dict[str, Any] = response.json()["data"]
        return data

    def all_done() -> bool | None:
        seen = {payout_id: payout(payout_id) for payout_id in payouts}
        waiting = [
            f"{payouts[payout_id].name}: {data['status']}"
            for payout_id, data in seen.items()
            if data["status"] != payouts[payout_id].status
        ]
        if waiting:
            log(f"waiting for {len(waiting)} outcome(s): {'; '.join(waiting)}")
            return None
        for payout_id, data in seen.items():
            scenario = payouts[payout_id]
            if scenario.account.endswith("0002") and data["attempts"] != 2:
                raise SmokeFailure(f"{scenario.name}: attempts {data['attempts']}, expected 2")
            if scenario.status == "FAILED" and data["failureCode"] != "ACCOUNT_INVALID":
                raise SmokeFailure(f"{scenario.name}: failureCode {data['failureCode']}")
            if scenario.status == "PENDING" and not data["pspReference"]:
                raise SmokeFailure(f"{scenario.name}: no pspReference")
        return True

    poll("every payout's outcome", OUTCOME_SECONDS, all_done, every=2)


def wait_for_webhooks(compose: Compose, payouts: dict[str, Scenario]) -> int:
    """Each payout's created and final events (and 0002's retry) at the sink, signature ok.
    Returns how many events the sink verified."""
    expected = {
        (payout_id, event)
        for payout_id, scenario in payouts.items()
        for event in (
            "payout.created",
            scenario.event,
            *(["payout.retrying"] if scenario.account.endswith("0002") else []),
        )
    }

    def all_arrived() -> int | None:
        lines = compose.logs("webhook-sink")
        if rejected := [line for line in lines if "REJECTED" in line]:
            raise SmokeFailure(f"the sink refused a signature: {rejected[0]}")
        verified = [line for line in lines if line.rstrip().endswith("[signature ok]")]
        arrived = {
            (payout_id, event)
            for line in verified
            for payout_id, event in expected
            if f" {event} payout={payout_id} " in line
        }
        if missing := expected - arrived:
            log(f"waiting for {len(missing)} of {len(expected)} webhook(s) at the sink")
            return None
        return len(verified)

    return poll("the webhooks at the sink", OUTCOME_SECONDS, all_arrived, every=2)


def check_rabbitmq(management: str) -> str:
    """The preloaded definitions' queues, consumed; the dead-letter routes in place. A consumer
    shows in the management API's queue stats only at their next emission (every few seconds):
    polled."""
    definitions = json.loads(DEFINITIONS.read_text())
    work_queues = ("processor.payout-commands", "processor.psp-outcomes", "webhooks.payout-events")

    def consumed() -> tuple[dict[str, Any], str] | None:
        with httpx.Client(base_url=management, auth=OPERATOR, timeout=10) as client:
            overview = client.get("/api/overview")
            overview.raise_for_status()
            queues = {queue["name"]: queue for queue in client.get("/api/queues/payouts").json()}
        if missing := {queue["name"] for queue in definitions["queues"]} - set(queues):
            raise SmokeFailure(f"RabbitMQ lacks the preloaded queues {sorted(missing)}")
        if idle := [name for name in work_queues if not queues[name].get("consumers")]:
            log(f"no consumer shown yet on {', '.join(idle)}")
            return None
        return queues, str(overview.json()["rabbitmq_version"])

    queues, version = poll("a consumer on every work queue", CONSUMER_SECONDS, consumed, every=2)
    for name in work_queues:
        if queues[name]["arguments"].get("x-dead-letter-exchange") != "payouts.dead-letter":
            raise SmokeFailure(f"{name} has no dead-letter exchange: {queues[name]['arguments']}")
    return version


def wait_until_healthy(compose: Compose) -> None:
    """Every container of the services that have only a heartbeat to show is healthy."""

    def healthy() -> bool | None:
        seen = {service: compose.health(service) for service in HEARTBEAT_SERVICES}
        if not_yet := {name: health for name, health in seen.items() if health != ["healthy"]}:
            log(f"not healthy yet: {not_yet}")
            return None
        return True

    poll("the relay, the processor, the webhooks and the sink healthy", HEALTHY_SECONDS, healthy)


def show_state(compose: Compose) -> None:
    """After a failure: what ran, and the end of every service's log."""
    for args in (("ps",), ("logs", "--no-color", "--tail", "60")):
        try:
            print(compose.run(*args, capture=True, timeout=60), flush=True)
        except (SmokeFailure, subprocess.TimeoutExpired) as exc:
            log(f"could not show `{' '.join(args)}`: {exc}")


def smoke(compose: Compose, api: str, management: str, api_key: str) -> None:
    started = time.monotonic()

    def step(message: str) -> None:
        log(f"{time.monotonic() - started:6.1f} s  {message}")

    # `up -d --build`, in two steps: every app service runs the same image, built once here
    # (docker-compose v1 would build it once per service, and a file edited in between would
    # leave the services running different code).
    step("docker compose build migrate (the image of every app service)")
    compose.run("build", "migrate", timeout=UP_SECONDS)
    step("docker compose up -d")
    compose.run("up", "-d", "--no-build", timeout=UP_SECONDS)
    step("up; waiting for /api/v1/ready")
    wait_until_ready(api)
    step("ready; checking the seed")
    merchant_id = check_seed_is_idempotent(compose)
    step(f"seed ok (demo merchant {merchant_id}, reused by a second run); creating payouts")
    with httpx.Client(base_url=api, headers={"X-API-KEY": api_key}, timeout=30) as client:
        payouts = create_payouts(client)
        wait_for_outcomes(client, payouts)
    step(f"all {len(payouts)} scenarios reached their outcome; waiting for the webhooks")
    verified = wait_for_webhooks(compose, payouts)
    step(f"{verified} webhooks at the sink, every signature verified; asking RabbitMQ")
    version = check_rabbitmq(management)
    step(f"RabbitMQ {version}: topology loaded, work queues consumed; asking docker's health")
    wait_until_healthy(compose)
    step(f"{', '.join(HEARTBEAT_SERVICES)}: healthy")


def main() -> int:
    api_port, ui_port = free_port(), free_port()
    api_key = new_api_key()
    env = {
        **os.environ,
        "PAYOUTS_API_PORT_PUBLISHED": str(api_port),
        "PAYOUTS_RABBITMQ_UI_PORT_PUBLISHED": str(ui_port),
        # Chosen here, so the smoke knows the demo merchant's key. Its webhook secret is not:
        # the seed makes one, and the sink reads it, as on a plain `docker compose up`.
        "PAYOUTS_DEMO_API_KEY": api_key,
    }
    env.pop("PAYOUTS_DEMO_WEBHOOK_SECRET", None)
    compose = Compose(f"payouts-smoke-{os.getpid()}", env)

    def stop(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through `finally`: the stack still goes down

    signal.signal(signal.SIGTERM, stop)
    outcome = 1
    try:
        smoke(
            compose,
            api=f"http://127.0.0.1:{api_port}/api/v1",
            management=f"http://127.0.0.1:{ui_port}",
            api_key=api_key,
        )
        outcome = 0
        log("PASSED")
    except (SmokeFailure, httpx.HTTPError, subprocess.TimeoutExpired) as exc:
        log(f"FAILED: {exc}")
        show_state(compose)
    finally:
        log("docker compose down -v")
        try:
            compose.run("down", "-v", "--remove-orphans", timeout=180, capture=True)
        except (SmokeFailure, subprocess.TimeoutExpired) as exc:
            log(f"down -v failed, remove the project's containers by hand: {exc}")
            outcome = 1
    return outcome


if __name__ == "__main__":
    sys.exit(main())
