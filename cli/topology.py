"""`payouts topology export`: the broker topology as a RabbitMQ definitions file.

RabbitMQ loads the file at boot (`load_definitions` in deploy/rabbitmq/rabbitmq.conf), so an
operator sees every exchange, queue and binding, dead-letter and parking-lot queues included,
before the first message. It is generated from contracts/topology.py, the same objects the
services declare at start-up, so the two cannot disagree; a unit test compares the committed file
with this output.
"""

import base64
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.output_files import write_output
from contracts.settings import get_settings
from contracts.topology import (
    DEAD_LETTER_EXCHANGE,
    EXCHANGES,
    KEEP_READ_MESSAGES_POLICY,
    RETRY_RETURN_EXCHANGE,
    WorkQueue,
    all_work_queues,
)

DEFINITIONS_PATH = Path("deploy/rabbitmq/definitions.json")
COMPOSE_VHOST = "payouts"


@dataclass(frozen=True)
class BrokerUser:
    name: str
    password: str
    tags: tuple[str, ...] = ()


# docker-compose's users; anything beyond a laptop exports its own passwords.
COMPOSE_SERVICE_USER = BrokerUser("payouts", "payouts")
COMPOSE_OPERATOR_USER = BrokerUser("operator", "operator", ("administrator",))


def password_hash(user: BrokerUser) -> str:
    """RabbitMQ's `rabbit_password_hashing_sha256`: base64(salt + SHA-256(salt + password)).

    The 4-byte salt comes from the user name, not from a random source, so exporting twice gives
    the same file (the committed file is compared with a fresh export).
    """
    salt = hashlib.sha256(user.name.encode()).digest()[:4]
    digest = hashlib.sha256(salt + user.password.encode()).digest()
    return base64.b64encode(salt + digest).decode()


def _queue(name: str, vhost: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "vhost": vhost,
        "durable": True,
        "auto_delete": False,
        "arguments": arguments,
    }


def _binding(exchange: str, queue: str, routing_key: str, vhost: str) -> dict[str, Any]:
    return {
        "source": exchange,
        "vhost": vhost,
        "destination": queue,
        "destination_type": "queue",
        "routing_key": routing_key,
        "arguments": {},
    }


def _work_queue_parts(
    queue: WorkQueue, vhost: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Queues and bindings exactly as `contracts.topology.declare_work_queue` declares them."""
    quorum = {"x-queue-type": "quorum"}
    queues = [
        _queue(queue.name, vhost, queue.arguments),
        _queue(queue.dead_letter_queue, vhost, quorum),
    ]
    bindings = [_binding(queue.exchange, queue.name, key, vhost) for key in queue.routing_keys]
    bindings.append(_binding(RETRY_RETURN_EXCHANGE, queue.name, queue.name, vhost))
    bindings.append(
        _binding(DEAD_LETTER_EXCHANGE, queue.dead_letter_queue, queue.dead_letter_queue, vhost)
    )
    queues.extend(
        _queue(waiting, vhost, queue.retry_arguments()) for waiting in queue.waiting_queues()
    )
    if queue.parking_lot:
        queues.append(_queue(queue.parking_lot, vhost, quorum))
        bindings.append(_binding(DEAD_LETTER_EXCHANGE, queue.parking_lot, queue.parking_lot, vhost))
    return queues, bindings


def export_definitions(
    retry_tiers: int,
    *,
    vhost: str = COMPOSE_VHOST,
    users: Iterable[BrokerUser] = (COMPOSE_SERVICE_USER, COMPOSE_OPERATOR_USER),
) -> dict[str, Any]:
    """A RabbitMQ definitions document: vhost, users with full rights on it, the whole topology.

    `retry_tiers` is the length of the webhook retry ladder (one TTL queue per tier).
    """
    members = tuple(users)
    queues: list[dict[str, Any]] = []
    bindings: list[dict[str, Any]] = []
    for queue in all_work_queues(retry_tiers):
        queue_definitions, queue_bindings = _work_queue_parts(queue, vhost)
        # Once each: both webhook lanes park into the one parking lot.
        queues.extend(part for part in queue_definitions if part not in queues)
        bindings.extend(part for part in queue_bindings if part not in bindings)
    return {
        "users": [
            {
                "name": user.name,
                "password_hash": password_hash(user),
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": list(user.tags),
            }
            for user in members
        ],
        "vhosts": [{"name": vhost}],
        "permissions": [
            {"user": user.name, "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"}
            for user in members
        ],
        "parameters": [],
        "policies": [{"vhost": vhost, **KEEP_READ_MESSAGES_POLICY}],
        "exchanges": [
            {
                "name": name,
                "vhost": vhost,
                "type": kind.value,
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": {},
            }
            for name, kind in EXCHANGES.items()
        ],
        "queues": queues,
        "bindings": bindings,
    }


def render_definitions(definitions: dict[str, Any]) -> str:
    return json.dumps(definitions, indent=2) + "\n"


def topology_export_command(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the definitions ('-': stdout)")
    ] = DEFINITIONS_PATH,
    retry_tiers: Annotated[
        int | None,
        typer.Option(
            min=1, help="Webhook retry tiers [default: from PAYOUTS_WEBHOOK_RETRY_DELAYS]"
        ),
    ] = None,
    vhost: Annotated[str, typer.Option(help="Virtual host")] = COMPOSE_VHOST,
    service_password: Annotated[
        str, typer.Option(help="Password of the 'payouts' user the services connect as")
    ] = COMPOSE_SERVICE_USER.password,
    operator_password: Annotated[
        str, typer.Option(help="Password of the 'operator' user (management UI)")
    ] = COMPOSE_OPERATOR_USER.password,
) -> None:
    """Write the RabbitMQ definitions file (vhost, users, exchanges, queues, bindings)."""
    tiers = retry_tiers or len(get_settings().webhook_retry_ladder)
    users = (
        BrokerUser(COMPOSE_SERVICE_USER.name, service_password),
        BrokerUser(COMPOSE_OPERATOR_USER.name, operator_password, COMPOSE_OPERATOR_USER.tags),
    )
    text = render_definitions(export_definitions(tiers, vhost=vhost, users=users))
    if str(output) == "-":
        typer.echo(text, nl=False)
        return
    write_output(output, text)
    typer.echo(f"wrote {output}: vhost {vhost!r}, {tiers} webhook retry tiers", err=True)
