"""The request log with a real uvicorn server: a call refused before its body was read (the
rate limit) is logged with its body. The recorder read the rest of the body once the answer
was sent, and under uvicorn a receive() after a complete answer says the client is gone: the
log showed no body, and the readiness report, which tells a retry by its body, never judged
the 429's retry (found by the readiness review)."""

import uuid

import httpx
import orjson
from sqlalchemy import select

from api_service.idempotency import request_fingerprint
from contracts.db.engine import SessionFactory
from contracts.db.models import ApiRequestRecord
from contracts.settings import Settings
from tests.conftest import MerchantFactory
from tests.support.api_helpers import API, auth, payout_body
from tests.support.api_server import serving_api
from tests.support.polling import eventually

ATTEMPTS = 10  # two calls a second apart miss the limit only across a second's boundary


async def test_a_call_refused_by_the_rate_limit_is_logged_with_its_body(
    settings: Settings, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant()
    limited = settings.model_copy(update={"rate_limit_per_second": 1})
    body = payout_body()
    async with (
        serving_api(limited) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
    ):
        for _ in range(ATTEMPTS):
            request_id = f"limited-{uuid.uuid4().hex}"
            headers = {**auth(merchant, str(uuid.uuid4())), "X-Request-ID": request_id}
            answer = await client.post(f"{API}/payouts", json=body, headers=headers)
            if answer.status_code == 429:
                break
        assert answer.status_code == 429, answer.text

    async def logged() -> ApiRequestRecord | None:
        async with sessions() as session:
            return await session.scalar(
                select(ApiRequestRecord).where(ApiRequestRecord.request_id == request_id)
            )

    record = await eventually(logged, what="the refused call logged")
    assert record.status == 429
    assert record.request_body is not None
    assert orjson.loads(record.request_body)["merchantReference"] == body["merchantReference"]
    assert record.request_digest == request_fingerprint(orjson.dumps(body))
