"""The merchants' webhook endpoint during a benchmark: a real HTTP server in its own process
(`python -m bench.receiver --port N`) that checks each Standard Webhooks signature with the
merchant's secret, notes when the webhook arrived, and answers 200 at once.

Each merchant's webhook URL is `/webhooks/<merchant id>`, so the receiver knows whose secret
signs. Control routes for the benchmark: `POST /_bench/secrets` ({merchant id: secret}),
`GET /_bench/count?since=<epoch seconds>` (distinct webhooks of events created since then),
`GET /_bench/received?clear=1` (every receipt so far, as JSON).
"""

import argparse
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

import orjson
import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.types import Receive, Scope, Send

WEBHOOK_PREFIX = "/webhooks/"


@dataclass(frozen=True)
class Receipt:
    received_at: float  # wall clock when the request reached the receiver
    webhook_id: str
    type: str
    payout_id: str
    payout_status: str
    payout_created_at: str
    payout_updated_at: str
    event_created_at: str
    signature_valid: bool
    client_port: int  # one per TCP connection: tells whether the sender keeps connections alive


class WebhookReceiver:
    """A plain ASGI app: no framework between the socket and the clock."""

    def __init__(self) -> None:
        self.verifiers: dict[str, Webhook] = {}
        self.receipts: list[Receipt] = []
        # webhook id -> its event's createdAt (epoch): a redelivery is not a second webhook
        self.distinct: dict[str, float] = {}
        self.malformed = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        received_at = time.time()
        body = await _read_body(receive)
        path: str = scope["path"]
        if scope["method"] == "POST" and path.startswith(WEBHOOK_PREFIX):
            self._record(path.removeprefix(WEBHOOK_PREFIX), scope, body, received_at)
            await _respond(send, 200, b"")
        elif path == "/_bench/secrets" and scope["method"] == "POST":
            secrets: dict[str, str] = orjson.loads(body)
            self.verifiers.update({merchant: Webhook(key) for merchant, key in secrets.items()})
            await _respond(send, 204, b"")
        elif path == "/_bench/count":
            await _respond(send, 200, orjson.dumps({"count": self._count(scope)}))
        elif path == "/_bench/received":
            await _respond(send, 200, orjson.dumps(self._snapshot(scope)))
        else:
            await _respond(send, 404, b"")

    def _record(self, merchant_id: str, scope: Scope, body: bytes, received_at: float) -> None:
        headers = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        }
        verifier = self.verifiers.get(merchant_id)
        valid = False
        if verifier is not None:
            try:
                verifier.verify(body, headers, json_parse=False)
                valid = True
            except WebhookVerificationError:
                valid = False
        try:
            event = orjson.loads(body)
            payout = event["payout"]
            self.receipts.append(
                Receipt(
                    received_at=received_at,
                    webhook_id=headers.get("webhook-id", ""),
                    type=event["type"],
                    payout_id=payout["id"],
                    payout_status=payout["status"],
                    payout_created_at=payout["createdAt"],
                    payout_updated_at=payout["updatedAt"],
                    event_created_at=event["createdAt"],
                    signature_valid=valid,
                    client_port=int((scope.get("client") or ("", 0))[1]),
                )
            )
            created = datetime.fromisoformat(event["createdAt"].replace("Z", "+00:00"))
            self.distinct[self.receipts[-1].webhook_id] = created.timestamp()
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.malformed += 1

    def _count(self, scope: Scope) -> int:
        """Distinct webhooks of the events created since `since` (all without it): a phase's
        drain must not count the late webhooks of a phase before it."""
        query = parse_qs(scope.get("query_string", b"").decode())
        since = float(query.get("since", ["0"])[0])
        return sum(1 for created in self.distinct.values() if created >= since)

    def _snapshot(self, scope: Scope) -> dict[str, Any]:
        query = parse_qs(scope.get("query_string", b"").decode())
        snapshot = {"receipts": [asdict(r) for r in self.receipts], "malformed": self.malformed}
        if query.get("clear") == ["1"]:
            self.receipts = []
            self.distinct = {}
            self.malformed = 0
        return snapshot

    @staticmethod
    async def _lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    if body:
        headers.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        WebhookReceiver(),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
