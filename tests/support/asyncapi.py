"""docs/asyncapi.yaml as the tests read it: the document (as committed), the messages it says
travel under each routing key, and a real body or headers judged against its schemas."""

from pathlib import Path
from typing import Any

import jsonschema_rs
import yaml

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"


def committed_document() -> dict[str, Any]:
    parsed: dict[str, Any] = yaml.safe_load(COMMITTED.read_text())
    return parsed


def schema_errors(doc: dict[str, Any], schema: dict[str, Any], instance: Any) -> list[str]:
    """Every way `instance` breaks `schema` (its `$ref`s into the document's components; formats
    checked)."""
    resolvable = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "components": doc["components"],
    }
    validator = jsonschema_rs.validator_for(resolvable, validate_formats=True)
    return [
        f"{list(error.instance_path)}: {error.message}" for error in validator.iter_errors(instance)
    ]


def messages_of_key(doc: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Routing key -> the message objects the operations say travel under it (their `cc`)."""
    messages = doc["components"]["messages"]
    found: dict[str, list[dict[str, Any]]] = {}
    for operation in doc["operations"].values():
        taken = []
        for reference in operation["messages"]:
            channel_name, _, message_key = reference["$ref"].split("/")[2:5]
            message_ref = doc["channels"][channel_name]["messages"][message_key]["$ref"]
            taken.append(messages[message_ref.rsplit("/", 1)[-1]])
        for key in operation["bindings"]["amqp"]["cc"]:
            found.setdefault(key, []).extend(taken)
    return found


def payload_name(message: dict[str, Any]) -> str:
    return str(message["payload"]["$ref"].rsplit("/", 1)[-1])
