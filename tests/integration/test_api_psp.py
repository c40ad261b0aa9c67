"""POST /ipn/psp (HMAC-signed PSP callbacks) and the sandbox simulate endpoint: recorded once
per event id, checked against the legal transitions, handed to the processor via the outbox."""

import asyncio
import types
import uuid
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import Insert, func, insert, select, text, update

from api_service.payouts import service as payout_service
from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.db.models import Payout, PspCallback, PspReferenceClaim
from contracts.domain.psp_references import psp_reference_for
from contracts.domain.statuses import PayoutStatus
from contracts.messages import ApplyPspOutcome
from contracts.settings import Settings
from contracts.topology import APPLY_PSP_OUTCOME_KEY, COMMANDS_EXCHANGE
from processor_service.handlers import Context, apply_psp_outcome
from tests.conftest import MerchantFactory
from tests.support.api_helpers import (
    API,
    assert_error,
    auth,
    create_failed_payout,
    create_payout,
    footprint,
    move_payout,
    outbox_for_payout,
    post_ipn,
    psp_headers,
    send_ipn,
)
from tests.support.polling import eventually


def _callback(payout_id: str, status: str, **extra: Any) -> bytes:
    body = {"eventId": f"evt-{uuid.uuid4().hex}", "payoutId": payout_id, "status": status}
    return orjson.dumps({**body, **extra})


async def _callbacks(sessions: SessionFactory, payout_id: str) -> list[PspCallback]:
    async with sessions() as session:
        rows = await session.scalars(select(PspCallback).where(PspCallback.payout_id == payout_id))
        return list(rows)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-PSP-Signature": ""},
        {"X-PSP-Signature": "0" * 64},
        {"X-PSP-Signature": "not hex"},
    ],
    ids=["missing", "empty", "wrong", "garbage"],
)
async def test_ipn_without_a_valid_signature_is_401(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    headers: dict[str, str],
) -> None:
    merchant = await make_merchant()
    payout = await create_payout(api_client, merchant)
    before = await footprint(sessions, merchant.merchant_id)
    body = _callback(payout["id"], "SUCCESS")
    response = await api_client.post(f"{API}/ipn/psp", content=body, headers=headers)
    assert_error(response, 401, "INVALID_SIGNATURE")
    assert await footprint(sessions, merchant.merchant_id) == before


async def test_ipn_signed_over_another_body_is_401(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, settings: Settings
) -> None:
    payout = await create_payout(api_client, await make_merchant())
    signed = _callback(payout["id"], "FAILED")
    sent = signed.replace(b"FAILED", b"SUCCESS")
    response = await api_client.post(
        f"{API}/ipn/psp", content=sent, headers=psp_headers(settings.psp_secret, signed)
    )
    assert_error(response, 401, "INVALID_SIGNATURE")
    wrong_secret = await api_client.post(
        f"{API}/ipn/psp", content=signed, headers=psp_headers("another secret", signed)
    )
    assert_error(wrong_secret, 401, "INVALID_SIGNATURE")


@pytest.mark.parametrize("valid_first", [True, False])
async def test_an_ipn_whose_signature_is_given_twice_is_401_whichever_comes_first(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
    valid_first: bool,
) -> None:
    """The first header was taken: the valid signature first was accepted, second refused."""
    merchant = await make_merchant()
    payout = await create_payout(api_client, merchant)
    before = await footprint(sessions, merchant.merchant_id)
    body = _callback(payout["id"], "SUCCESS")
    valid = psp_headers(settings.psp_secret, body)["X-PSP-Signature"]
    signatures = [valid, "0" * 64] if valid_first else ["0" * 64, valid]
    headers = [("Content-Type", "application/json")]
    headers += [("X-PSP-Signature", signature) for signature in signatures]

    response = await api_client.post(f"{API}/ipn/psp", content=body, headers=headers)

    assert_error(response, 401, "INVALID_SIGNATURE")
    assert "more than once" in response.json()["error"]["message"]
    assert await footprint(sessions, merchant.merchant_id) == before


async def test_ipn_is_recorded_and_sent_to_the_processor(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    payout = await create_payout(api_client, await make_merchant())
    body = _callback(payout["id"], "SUCCESS", pspReference="PSP-1")
    response = await post_ipn(api_client, settings.psp_secret, body)
    assert response.status_code == 200, response.text
    event_id = orjson.loads(body)["eventId"]
    assert response.json()["data"] == {
        "eventId": event_id,
        "payoutId": payout["id"],
        "duplicate": False,
    }
    [callback] = await _callbacks(sessions, payout["id"])
    assert (callback.event_id, callback.outcome, callback.psp_reference, callback.source) == (
        event_id,
        "SUCCESS",
        "PSP-1",
        "IPN",
    )
    commands = [
        m
        for m in await outbox_for_payout(sessions, payout["id"])
        if m.routing_key == APPLY_PSP_OUTCOME_KEY
    ]
    assert [(m.exchange, orjson.loads(m.body)["callbackEventId"]) for m in commands] == [
        (COMMANDS_EXCHANGE, event_id)
    ]


async def test_the_receipt_names_the_payout_as_stored_whatever_the_case_of_its_id(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, settings: Settings
) -> None:
    """A payout id is a UUID, found in either case (as an idempotency key); the receipt echoed
    the PSP's upper case, unlike every other answer of the API (IPN review)."""
    payout = await create_payout(api_client, await make_merchant())
    response = await send_ipn(api_client, settings.psp_secret, payout["id"].upper(), "SUCCESS")
    assert response.status_code == 200, response.text
    assert response.json()["data"]["payoutId"] == payout["id"]


async def test_the_same_event_twice_is_applied_once(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    merchant = await make_merchant()
    payout = await create_payout(api_client, merchant)
    body = _callback(payout["id"], "FAILED", failureReason="Closed account")
    first = await post_ipn(api_client, settings.psp_secret, body)
    after_first = await footprint(sessions, merchant.merchant_id)
    second = await post_ipn(api_client, settings.psp_secret, body)
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json()["data"]["duplicate"] is True
    assert second.json()["data"]["payoutId"] == payout["id"]
    assert await footprint(sessions, merchant.merchant_id) == after_first
    assert after_first.callbacks == 1


async def test_an_event_id_already_sent_for_another_payout_is_422_and_changes_nothing(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    """It was answered 200 `duplicate: true`, and the second payout's outcome was dropped."""
    merchant = await make_merchant()
    first, second = [await create_payout(api_client, merchant) for _ in range(2)]
    event_id = f"evt-{uuid.uuid4().hex}"
    await post_ipn(
        api_client, settings.psp_secret, _callback(first["id"], "SUCCESS", eventId=event_id)
    )
    before = await footprint(sessions, merchant.merchant_id)

    again = _callback(second["id"], "SUCCESS", eventId=event_id)
    reused = await post_ipn(api_client, settings.psp_secret, again)

    assert_error(reused, 422, "EVENT_ID_REUSED", "eventId")
    assert await footprint(sessions, merchant.merchant_id) == before


async def test_an_event_id_sent_again_with_another_status_is_422_and_changes_nothing(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    """A REVERSED under the id of the SUCCESS before it was answered 200 `duplicate: true`: the
    PSP took the reversal as received, and the merchant's money never came back."""
    merchant = await make_merchant()
    payout = await create_payout(api_client, merchant)
    event_id = f"evt-{uuid.uuid4().hex}"
    success = _callback(payout["id"], "SUCCESS", eventId=event_id)
    assert (await post_ipn(api_client, settings.psp_secret, success)).status_code == 200
    await move_payout(sessions, payout["id"], PayoutStatus.SUCCESS)
    before = await footprint(sessions, merchant.merchant_id)

    reversal = _callback(payout["id"], "REVERSED", eventId=event_id)
    reused = await post_ipn(api_client, settings.psp_secret, reversal)

    assert_error(reused, 422, "EVENT_ID_REUSED", "eventId")
    assert "SUCCESS" in reused.json()["error"]["message"]
    assert await footprint(sessions, merchant.merchant_id) == before
    again = await post_ipn(api_client, settings.psp_secret, success)  # the same event: a replay
    assert again.json()["data"]["duplicate"] is True


@pytest.mark.parametrize("theirs_by", ["generated", "current", "accepted"])
async def test_an_ipn_naming_another_payouts_psp_reference_is_409_and_changes_nothing(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
    theirs_by: str,
) -> None:
    """It was accepted, and two merchants' payouts ended with one PSP reference: one we gave
    the other payout, its current one, or one the PSP named in an outcome accepted for it and
    not applied yet (no processor runs here: back to back, as a minute apart)."""
    theirs = await create_payout(api_client, await make_merchant())
    merchant = await make_merchant()
    mine = await create_payout(api_client, merchant)
    reference = f"BANK-{uuid.uuid4().hex[:10]}"
    if theirs_by == "generated":
        reference = psp_reference_for(theirs["id"], 1)
    elif theirs_by == "current":
        async with transaction(sessions) as session:
            await session.execute(
                update(Payout).where(Payout.id == theirs["id"]).values(psp_reference=reference)
            )
    else:
        accepted = _callback(theirs["id"], "SUCCESS", pspReference=reference)
        assert (await post_ipn(api_client, settings.psp_secret, accepted)).status_code == 200
    before = await footprint(sessions, merchant.merchant_id)

    body = _callback(mine["id"], "SUCCESS", pspReference=reference)
    response = await post_ipn(api_client, settings.psp_secret, body)

    assert_error(response, 409, "PSP_REFERENCE_OF_ANOTHER_PAYOUT", "pspReference")
    assert await footprint(sessions, merchant.merchant_id) == before
    own = _callback(mine["id"], "SUCCESS", pspReference=psp_reference_for(mine["id"], 1))
    assert (await post_ipn(api_client, settings.psp_secret, own)).status_code == 200


async def test_one_psp_reference_sent_for_two_payouts_at_once_is_taken_by_one(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, settings: Settings
) -> None:
    """Each callback locks only its own payout and neither read the other's outcome (not
    committed yet): both were accepted, two payouts with one reference, in 19 pairs of 20."""
    for _ in range(10):
        pair = [await create_payout(api_client, await make_merchant()) for _ in range(2)]
        reference = f"BANK-{uuid.uuid4().hex[:12]}"
        answers = await asyncio.gather(
            *(
                post_ipn(
                    api_client,
                    settings.psp_secret,
                    _callback(payout["id"], "SUCCESS", pspReference=reference),
                )
                for payout in pair
            )
        )
        assert sorted(answer.status_code for answer in answers) == [200, 409]


async def test_callbacks_waiting_on_a_claim_that_rolls_back_each_get_their_answer(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    """A callback that claimed a new reference and was then refused rolls its claim back; the
    two waiting on it deadlocked in InnoDB, and the victim's PSP got a 503."""
    pair = [await create_payout(api_client, await make_merchant()) for _ in range(2)]
    reference = f"BANK-{uuid.uuid4().hex[:12]}"
    claim = insert(PspReferenceClaim).values(psp_reference=reference, payout_id=str(uuid.uuid4()))
    callbacks = [_callback(payout["id"], "SUCCESS", pspReference=reference) for payout in pair]

    answers = await _answers_once_it_rolls_back(
        api_client, sessions, settings, held=claim, callbacks=callbacks
    )

    assert sorted(answers) == [200, 409]


async def test_callbacks_waiting_on_an_event_id_that_rolls_back_each_get_their_answer(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    """One event id sent for two payouts while a third callback holds it and then rolls back:
    the two waiting deadlock in InnoDB inside the savepoint that records a callback. The
    victim's deadlock came out as the savepoint gone (1305), a 500 no retry caught; run again,
    it finds the event id the other payout's (422 EVENT_ID_REUSED)."""
    *pair, holder = [await create_payout(api_client, await make_merchant()) for _ in range(3)]
    event_id = f"evt-{uuid.uuid4().hex}"
    callback = insert(PspCallback).values(
        event_id=event_id,
        payout_id=holder["id"],
        hold_cycle=1,
        outcome="SUCCESS",
        source="ipn",
        received_at=utcnow(),
    )
    callbacks = [
        orjson.dumps({"eventId": event_id, "payoutId": payout["id"], "status": "SUCCESS"})
        for payout in pair
    ]

    answers = await _answers_once_it_rolls_back(
        api_client, sessions, settings, held=callback, callbacks=callbacks
    )

    assert sorted(answers) == [200, 422]


async def _answers_once_it_rolls_back(
    api_client: httpx.AsyncClient,
    sessions: SessionFactory,
    settings: Settings,
    *,
    held: Insert,
    callbacks: list[bytes],
) -> list[int]:
    """Post the callbacks while another transaction holds the row `held` inserts, once they all
    wait on it roll that transaction back; their answers' status codes."""
    table = held.table.name
    waiting = (
        select(func.count())
        .select_from(text("information_schema.PROCESSLIST"))
        .where(text(f"DB = DATABASE() AND INFO LIKE 'INSERT INTO {table}%'"))
    )
    async with sessions() as holder:
        await holder.execute(held)
        answers = asyncio.gather(
            *(post_ipn(api_client, settings.psp_secret, body) for body in callbacks)
        )

        async def all_wait() -> bool:
            async with sessions() as session:
                return await session.scalar(waiting) == len(callbacks)

        await eventually(all_wait, within=10, what=f"the callbacks waiting on {table}")
        await holder.rollback()
    return [answer.status_code for answer in await answers]


async def test_a_psp_reference_differing_in_case_from_another_payouts_is_not_theirs(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    """References are case-sensitive (migration 0016); payouts.psp_reference compares without
    case, and `PO-aB` was refused as the payout holding `PO-Ab`."""
    theirs = await create_payout(api_client, await make_merchant())
    mine = await create_payout(api_client, await make_merchant())
    stem = f"PO-{uuid.uuid4().hex[:8]}-"
    async with transaction(sessions) as session:
        await session.execute(
            update(Payout).where(Payout.id == theirs["id"]).values(psp_reference=stem + "Ab")
        )
    body = _callback(mine["id"], "SUCCESS", pspReference=stem + "aB")
    assert (await post_ipn(api_client, settings.psp_secret, body)).status_code == 200


async def test_the_same_event_at_once_is_applied_once(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    merchant = await make_merchant()
    payout = await create_payout(api_client, merchant)
    before = await footprint(sessions, merchant.merchant_id)
    body = _callback(payout["id"], "SUCCESS")
    responses = await asyncio.gather(
        *(post_ipn(api_client, settings.psp_secret, body) for _ in range(8))
    )
    assert [r.status_code for r in responses] == [200] * 8, [r.text for r in responses]
    assert [r.json()["data"]["duplicate"] for r in responses].count(False) == 1
    after = await footprint(sessions, merchant.merchant_id)
    assert (after.callbacks, after.outbox) == (before.callbacks + 1, before.outbox + 1)


TRANSITIONS = [
    ("PENDING", "SUCCESS", 200),
    ("PROCESSING", "FAILED", 200),
    ("RETRY", "SUCCESS", 200),
    ("ON_HOLD", "FAILED", 200),
    ("IN_REVIEW", "SUCCESS", 200),
    ("SUCCESS", "REVERSED", 200),
    ("PENDING", "REVERSED", 409),
    ("IN_REVIEW", "REVERSED", 409),
    ("SUCCESS", "FAILED", 409),
    ("SUCCESS", "SUCCESS", 409),
    ("FAILED", "SUCCESS", 409),
    ("REVERSED", "REVERSED", 409),
    ("REVERSED", "SUCCESS", 409),
    # A payout status no callback moves a payout to: a transition the table does not allow
    # (CONTRACT.md), not a body the API cannot read (it was a 400).
    ("PENDING", "PENDING", 409),
    ("ON_HOLD", "PROCESSING", 409),
    ("IN_REVIEW", "ON_HOLD", 409),
    ("PROCESSING", "IN_REVIEW", 409),
    ("SUCCESS", "RETRY", 409),
]


@pytest.mark.parametrize(("current", "outcome", "status"), TRANSITIONS)
async def test_ipn_follows_the_transition_table(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
    current: str,
    outcome: str,
    status: int,
) -> None:
    merchant = await make_merchant()
    payout = await create_payout(api_client, merchant)
    await move_payout(sessions, payout["id"], PayoutStatus(current))
    before = await footprint(sessions, merchant.merchant_id)
    response = await post_ipn(api_client, settings.psp_secret, _callback(payout["id"], outcome))
    if status == 409:
        assert_error(response, 409, "INVALID_TRANSITION", "status")
        assert await footprint(sessions, merchant.merchant_id) == before
    else:
        assert response.status_code == 200, response.text
        assert (await footprint(sessions, merchant.merchant_id)).callbacks == 1


async def test_ipn_for_an_unknown_payout_is_404(
    api_client: httpx.AsyncClient, settings: Settings
) -> None:
    body = _callback(str(uuid.uuid4()), "SUCCESS")
    assert_error(await post_ipn(api_client, settings.psp_secret, body), 404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"eventId": "e1", "payoutId": "p", "status": "DONE"}, "status"),
        ({"eventId": "e1", "payoutId": "p"}, "status"),
        ({"payoutId": "p", "status": "SUCCESS"}, "eventId"),
        ({"eventId": "e1", "status": "SUCCESS"}, "payoutId"),
        ({"eventId": "", "payoutId": "p", "status": "SUCCESS"}, "eventId"),
    ],
)
async def test_signed_ipn_with_invalid_fields_is_400_naming_them(
    api_client: httpx.AsyncClient, settings: Settings, body: dict[str, Any], field: str
) -> None:
    response = await post_ipn(api_client, settings.psp_secret, orjson.dumps(body))
    assert_error(response, 400, "VALIDATION_ERROR", field)


async def test_sandbox_simulate_records_an_outcome_for_the_processor(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant()
    payout = await create_payout(api_client, merchant)
    response = await api_client.post(
        f"{API}/sandbox/payouts/{payout['id']}/simulate",
        json={"outcome": "FAILED", "failureReason": "Simulated"},
        headers=auth(merchant),
    )
    assert response.status_code == 202, response.text
    data = response.json()["data"]
    assert (data["payoutId"], data["outcome"]) == (payout["id"], "FAILED")
    [callback] = await _callbacks(sessions, payout["id"])
    assert (callback.event_id, callback.source, callback.failure_reason) == (
        data["eventId"],
        "SANDBOX",
        "Simulated",
    )
    outbox = await outbox_for_payout(sessions, payout["id"])
    assert APPLY_PSP_OUTCOME_KEY in [m.routing_key for m in outbox]


async def test_sandbox_simulate_checks_the_transition_and_the_body(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant()
    payout = await create_failed_payout(api_client, merchant, sessions)
    before = await footprint(sessions, merchant.merchant_id)
    path = f"{API}/sandbox/payouts/{payout['id']}/simulate"
    illegal = await api_client.post(path, json={"outcome": "SUCCESS"}, headers=auth(merchant))
    assert_error(illegal, 409, "INVALID_TRANSITION", "outcome")
    invalid = await api_client.post(path, json={"outcome": "MAYBE"}, headers=auth(merchant))
    assert_error(invalid, 400, "VALIDATION_ERROR", "outcome")
    # A sandbox control: a field it does not know is refused (it was ignored, the typo's
    # failure reason lost), as the faults', the chaos' and the clock's are.
    typo = {"outcome": "FAILED", "failureReasn": "Account closed"}
    unknown = await api_client.post(path, json=typo, headers=auth(merchant))
    assert_error(unknown, 400, "VALIDATION_ERROR", "failureReasn")
    assert await footprint(sessions, merchant.merchant_id) == before


async def test_sandbox_simulate_is_404_in_production(
    api_client: httpx.AsyncClient,
    production_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
) -> None:
    merchant = await make_merchant()
    payout = await create_payout(api_client, merchant)
    response = await production_client.post(
        f"{API}/sandbox/payouts/{payout['id']}/simulate",
        json={"outcome": "SUCCESS"},
        headers=auth(merchant),
    )
    assert_error(response, 404, "NOT_FOUND")


async def test_two_payouts_whose_ids_share_their_first_8_digits_are_both_simulated(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A simulation named the attempt by the id's first 8 hex digits (32 bits), references are
    one namespace for every merchant, and the second payout's simulation was 409
    PSP_REFERENCE_OF_ANOTHER_PAYOUT: once in 100 by 9,000 simulated payouts (found by the review
    of the PSP side)."""
    prefix = uuid.uuid4().hex[:8]
    ids = iter(uuid.UUID(prefix + uuid.uuid4().hex[8:]) for _ in range(2))
    monkeypatch.setattr(payout_service, "uuid", types.SimpleNamespace(uuid4=lambda: next(ids)))
    merchants = [await make_merchant(), await make_merchant()]
    payouts = [await create_payout(api_client, merchant) for merchant in merchants]
    monkeypatch.undo()
    assert payouts[0]["id"][:8] == payouts[1]["id"][:8]

    for merchant, payout in zip(merchants, payouts, strict=True):
        simulated = await api_client.post(
            f"{API}/sandbox/payouts/{payout['id']}/simulate",
            json={"outcome": "SUCCESS"},
            headers=auth(merchant),
        )
        assert simulated.status_code == 202, simulated.text


async def test_a_reinitiate_sent_before_an_accepted_failure_is_applied_may_be_retried_as_is(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """Simulate FAILED, then reinitiate at once: the processor has yet to apply the outcome, so
    the payout is not FAILED yet. That 409 was stored under the key, and the same request, sent
    again once the payout was FAILED, got it back for ever."""
    merchant = await make_merchant()
    payout = await create_payout(api_client, merchant)
    simulated = await api_client.post(
        f"{API}/sandbox/payouts/{payout['id']}/simulate",
        json={"outcome": "FAILED"},
        headers=auth(merchant),
    )
    assert simulated.status_code == 202, simulated.text
    key = str(uuid.uuid4())

    def reinitiate() -> Any:
        path = f"{API}/payouts/{payout['id']}/reinitiate"
        return api_client.post(path, headers=auth(merchant, key))

    early = await reinitiate()
    assert_error(early, 409, "INVALID_STATUS")
    assert early.headers["Retry-After"] == "1"
    assert "being applied" in early.json()["error"]["message"]

    # The processor applies it (its ApplyPspOutcome from the outbox).
    [command] = [
        ApplyPspOutcome.model_validate_json(row.body)
        for row in await outbox_for_payout(sessions, payout["id"])
        if row.routing_key == APPLY_PSP_OUTCOME_KEY
    ]
    async with transaction(sessions) as session:
        applied = await apply_psp_outcome(session, command, Context(None, retry_delay_ms=0))
    assert applied == PayoutStatus.FAILED

    again = await reinitiate()
    assert again.status_code == 200, again.text
    assert again.json()["data"]["status"] == "PENDING"
