"""The AsyncAPI document describes the bodies as they are published (money a string, as in every
webhook and REST answer) and the vhost a deployment puts the queues in."""

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from cli.topology import COMPOSE_VHOST
from contracts.asyncapi import DEPLOYED_VHOST, asyncapi_yaml
from contracts.webhooks import resend_routing_key

ROOT = Path(__file__).parents[2]


def document() -> dict[str, Any]:
    parsed: dict[str, Any] = yaml.safe_load(asyncapi_yaml())
    return parsed


def test_money_is_documented_as_the_string_it_is_published_as() -> None:
    amount = document()["components"]["schemas"]["PayoutView"]["properties"]["amount"]
    assert amount["type"] == "string"
    assert "anyOf" not in amount
    assert '"type": "number"' not in json.dumps(document()["components"]["schemas"])


def test_timestamps_stay_date_time_strings() -> None:
    view = document()["components"]["schemas"]["PayoutView"]["properties"]
    assert view["createdAt"] == {"format": "date-time", "title": "Createdat", "type": "string"}


def test_every_queue_is_in_the_vhost_docker_compose_and_the_definitions_use() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    compose_url = compose["x-payouts-env"]["PAYOUTS_AMQP_URL"]
    definitions = json.loads((ROOT / "deploy" / "rabbitmq" / "definitions.json").read_text())
    assert DEPLOYED_VHOST == COMPOSE_VHOST == urlsplit(compose_url).path.lstrip("/")
    assert [vhost["name"] for vhost in definitions["vhosts"]] == [DEPLOYED_VHOST]
    channels = document()["channels"].values()
    bindings = [channel["bindings"]["amqp"] for channel in channels]  # a queue's or an exchange's
    assert {(binding.get("queue") or binding["exchange"])["vhost"] for binding in bindings} == {
        "payouts"
    }
    [(name, server)] = document()["servers"].items()
    assert server["pathname"] == "/payouts"
    assert {ref["$ref"] for channel in channels for ref in channel["servers"]} == {
        f"#/servers/{name}"
    }


def test_the_server_says_which_vhost_make_run_uses() -> None:
    makefile = (ROOT / "Makefile").read_text()
    [local_url] = re.findall(r"^export PAYOUTS_AMQP_URL \?= (\S+)$", makefile, re.MULTILINE)
    assert urlsplit(local_url).path == "/"  # the broker's default vhost, `/`
    [server] = document()["servers"].values()
    assert "`make run`" in server["description"] and "vhost `/`" in server["description"]


def test_the_keys_of_resends_and_retries_are_documented_routing_keys() -> None:
    """A webhook resend or parked replay goes through the default exchange under the queue's
    name, and a message back from a retry queue carries its queue's name: the cc had left them
    out when it listed the keys of first publishes."""
    operations = document()["operations"]
    for in_bulk in (False, True):
        resends = resend_routing_key(in_bulk=in_bulk)
        assert resends in operations[resends]["bindings"]["amqp"]["cc"]
    for queue, operation in operations.items():
        assert queue in operation["bindings"]["amqp"]["cc"]
