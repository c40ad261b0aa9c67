"""An operator's RabbitMQ policy on a queue of the tests' vhost, set through the management API."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote

from tests.support.amqp import eventually
from tests.support.infrastructure import TEST_VHOST, Infrastructure, management_client


@asynccontextmanager
async def length_limit(
    infrastructure: Infrastructure, queue: str, length: int
) -> AsyncIterator[None]:
    """`queue` held at `length` messages, refusing publishes past it (as the work and waiting
    queues declare; a dead-letter queue would drop its oldest), in force once the block starts;
    lifted, and seen lifted, on the way out."""
    vhost = quote(TEST_VHOST, safe="")
    name = f"length-limit.{queue}"
    policy = f"/api/policies/{vhost}/{quote(name, safe='')}"
    async with management_client(infrastructure.management_url) as management:

        async def applied(expected: str | None) -> None:
            answer = await management.get(f"/api/queues/{vhost}/{quote(queue, safe='')}")
            assert answer.json().get("policy") == expected

        definition = {"max-length": length, "overflow": "reject-publish"}
        limit = {"pattern": f"^{queue}$", "definition": definition, "priority": 9}
        (await management.put(policy, json={**limit, "apply-to": "queues"})).raise_for_status()
        try:
            await eventually(lambda: applied(name))
            yield
        finally:
            (await management.delete(policy)).raise_for_status()
            await eventually(lambda: applied(None))
