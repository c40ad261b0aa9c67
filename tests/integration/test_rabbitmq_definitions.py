"""deploy/rabbitmq/definitions.json: what RabbitMQ loads at boot is what the code declares.

The pure tests check the committed file against `payouts topology export` and against the rules
an operator relies on (every dead-letter route ends in a queue). The last test asks the real
broker: what the services declare equals the file, and declaring on top of the file is accepted.
"""

import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cli.topology import (
    COMPOSE_OPERATOR_USER,
    COMPOSE_SERVICE_USER,
    export_definitions,
    render_definitions,
    topology_export_command,
)
from contracts.settings import Settings
from contracts.topology import (
    DEAD_LETTER_EXCHANGE,
    EXCHANGES,
    KEEP_READ_MESSAGES_POLICY,
    WEBHOOK_PARKING_LOT,
    all_work_queues,
    declare_topology_at,
)
from tests.support.amqp import eventually
from tests.support.infrastructure import (
    TEST_VHOST,
    Infrastructure,
    management_client,
    recreate_vhost,
)

ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS = ROOT / "deploy" / "rabbitmq" / "definitions.json"
RABBITMQ_CONF = ROOT / "deploy" / "rabbitmq" / "rabbitmq.conf"
ENABLED_PLUGINS = ROOT / "deploy" / "rabbitmq" / "enabled_plugins"

DEFAULT_TIERS = len(Settings.model_fields["webhook_retry_delays"].default.split(","))


def committed() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DEFINITIONS.read_text())
    return loaded


def queues_by_name(definitions: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {queue["name"]: queue for queue in definitions["queues"]}


def test_committed_file_is_exactly_what_topology_export_writes() -> None:
    assert DEFINITIONS.read_text() == render_definitions(export_definitions(DEFAULT_TIERS)), (
        "deploy/rabbitmq/definitions.json is stale: run `payouts topology export`"
    )


def test_export_command_writes_the_file(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "definitions.json"
    topology_export_command(target, retry_tiers=DEFAULT_TIERS)
    assert target.read_text() == DEFINITIONS.read_text()


def test_default_webhook_ladder_has_seven_retry_queues() -> None:
    names = queues_by_name(committed())
    assert DEFAULT_TIERS == 7
    assert [f"webhooks.payout-events.retry.{tier}" in names for tier in range(1, 8)] == [True] * 7
    assert "webhooks.payout-events.retry.8" not in names


def test_every_work_queue_has_its_dead_letter_queue_and_the_parking_lot_exists() -> None:
    names = queues_by_name(committed())
    for queue in all_work_queues(DEFAULT_TIERS):
        assert names[queue.name]["arguments"] == queue.arguments
        assert queue.dead_letter_queue in names
    assert WEBHOOK_PARKING_LOT in names


def test_every_queue_is_a_durable_quorum_queue() -> None:
    for queue in committed()["queues"]:
        assert queue["durable"] is True, queue["name"]
        assert queue["auto_delete"] is False, queue["name"]
        assert queue["arguments"]["x-queue-type"] == "quorum", queue["name"]


def test_every_dead_letter_route_ends_in_a_queue() -> None:
    """A message a queue dead-letters (delivery limit, expiry) must land somewhere: the
    exchange exists and a binding matches the routing key. Else RabbitMQ drops it silently."""
    definitions = committed()
    routes = {
        (binding["source"], binding["routing_key"]): binding["destination"]
        for binding in definitions["bindings"]
    }
    exchanges = {exchange["name"] for exchange in definitions["exchanges"]}
    queues = queues_by_name(definitions)
    dead_lettering = [q for q in queues.values() if "x-dead-letter-exchange" in q["arguments"]]

    assert dead_lettering, "no queue dead-letters anywhere"
    for queue in dead_lettering:
        exchange = queue["arguments"]["x-dead-letter-exchange"]
        key = queue["arguments"]["x-dead-letter-routing-key"]
        assert exchange in exchanges, queue["name"]
        assert routes.get((exchange, key)) in queues, f"{queue['name']} dead-letters nowhere"


def test_parking_lot_and_dead_letter_queues_are_bound_to_the_dead_letter_exchange() -> None:
    bound = {
        binding["destination"]
        for binding in committed()["bindings"]
        if binding["source"] == DEAD_LETTER_EXCHANGE
    }
    expected = {queue.dead_letter_queue for queue in all_work_queues(DEFAULT_TIERS)}
    assert bound == expected | {WEBHOOK_PARKING_LOT}


def test_the_queues_operators_read_keep_their_messages_on_rabbitmq_4() -> None:
    """RabbitMQ 4.0 to 4.2 give a quorum queue without a delivery limit one of 20: the 21st
    `payouts dlq list` found the dead letters gone, 20 replays of one merchant's parked webhooks
    dropped the others' (RabbitMQ compatibility review). The policy lifts it there, and on no
    queue a consumer fails on (their limit dead-letters a message that keeps failing)."""
    [policy] = committed()["policies"]
    pattern = re.compile(policy["pattern"])
    kept = {name for name in queues_by_name(committed()) if pattern.search(name)}

    expected = {queue.dead_letter_queue for queue in all_work_queues(DEFAULT_TIERS)}
    assert kept == expected | {WEBHOOK_PARKING_LOT}
    assert policy["definition"]["delivery-limit"] >= 1_000_000_000
    assert policy["apply-to"] == "queues"


def test_exchanges_match_the_topology_module() -> None:
    exported = {exchange["name"]: exchange["type"] for exchange in committed()["exchanges"]}
    assert exported == {name: kind.value for name, kind in EXCHANGES.items()}


def test_users_have_rights_on_the_vhost_and_only_the_operator_is_an_administrator() -> None:
    definitions = committed()
    users = {user["name"]: user for user in definitions["users"]}
    assert users[COMPOSE_SERVICE_USER.name]["tags"] == []
    assert users[COMPOSE_OPERATOR_USER.name]["tags"] == ["administrator"]
    [vhost] = [entry["name"] for entry in definitions["vhosts"]]
    assert {(entry["user"], entry["vhost"]) for entry in definitions["permissions"]} == {
        (name, vhost) for name in users
    }


def test_password_hashes_are_rabbitmq_salted_sha256_of_the_compose_passwords() -> None:
    users = {user["name"]: user for user in committed()["users"]}
    for user in (COMPOSE_SERVICE_USER, COMPOSE_OPERATOR_USER):
        entry = users[user.name]
        assert entry["hashing_algorithm"] == "rabbit_password_hashing_sha256"
        raw = base64.b64decode(entry["password_hash"])
        salt, digest = raw[:4], raw[4:]
        assert digest == hashlib.sha256(salt + user.password.encode()).digest()


def test_rabbitmq_conf_loads_the_file_and_plugins_include_shovel_for_move_messages() -> None:
    pairs = [
        line.split("=", 1)
        for line in RABBITMQ_CONF.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    settings = {key.strip(): value.strip() for key, value in pairs}
    assert settings["load_definitions"] == "/etc/rabbitmq/definitions.json"
    plugins = ENABLED_PLUGINS.read_text().strip().removeprefix("[").removesuffix("].")
    assert {"rabbitmq_management", "rabbitmq_shovel", "rabbitmq_shovel_management"} <= {
        plugin.strip() for plugin in plugins.split(",")
    }


# --- against the real broker ----------------------------------------------------------------------


def _topology(definitions: dict[str, Any]) -> dict[str, set[tuple[Any, ...]]]:
    """The comparable part of a definitions document: no vhost names, no broker-added keys."""
    return {
        "exchanges": {
            (e["name"], e["type"], e["durable"], e["auto_delete"], e["internal"])
            for e in definitions["exchanges"]
        },
        "queues": {
            (q["name"], q["durable"], q["auto_delete"], json.dumps(q["arguments"], sort_keys=True))
            for q in definitions["queues"]
        },
        "bindings": {
            (b["source"], b["destination"], b["destination_type"], b["routing_key"])
            for b in definitions["bindings"]
        },
    }


async def test_services_declare_exactly_the_exported_topology_and_accept_the_loaded_one(
    infrastructure: Infrastructure,
) -> None:
    exported = export_definitions(DEFAULT_TIERS, vhost=TEST_VHOST)
    vhost = quote(TEST_VHOST, safe="")
    async with management_client(infrastructure.management_url) as management:
        # 1. What `declare_topology` creates on an empty vhost is the file, nothing more or less.
        recreate_vhost(infrastructure.management_url, TEST_VHOST)
        await declare_topology_at(infrastructure.amqp_url, webhook_retry_tiers=DEFAULT_TIERS)
        declared = (await management.get(f"/api/definitions/{vhost}")).raise_for_status().json()
        assert _topology(declared) == _topology(exported)

        # 2. Loaded first (as at broker boot), the services' declarations are equivalent:
        #    a differing argument would fail here with PRECONDITION_FAILED.
        recreate_vhost(infrastructure.management_url, TEST_VHOST)
        parts = ("exchanges", "queues", "bindings", "policies")
        topology_only = {key: exported[key] for key in parts}
        imported = await management.post(f"/api/definitions/{vhost}", json=topology_only)
        assert imported.status_code in (201, 204), imported.text
        await declare_topology_at(infrastructure.amqp_url, webhook_retry_tiers=DEFAULT_TIERS)
        after = (await management.get(f"/api/definitions/{vhost}")).raise_for_status().json()
        assert _topology(after) == _topology(exported)

        # 3. The broker (3.10 here) takes the policy, on the queues it names.
        async def policy_of(queue: str) -> Any:
            path = f"/api/queues/{vhost}/{quote(queue, safe='')}"
            return (await management.get(path)).raise_for_status().json().get("policy")

        async def applied() -> None:
            assert await policy_of(WEBHOOK_PARKING_LOT) == KEEP_READ_MESSAGES_POLICY["name"]

        try:
            await eventually(applied, timeout=10)  # queues take a new policy in their own time
            assert await policy_of("webhooks.payout-events") is None
        finally:  # the vhost's other tests set policies of their own
            name = KEEP_READ_MESSAGES_POLICY["name"]
            (await management.delete(f"/api/policies/{vhost}/{name}")).raise_for_status()
