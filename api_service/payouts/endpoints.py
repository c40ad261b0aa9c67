import logging
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from api_service.deps import CurrentMerchant, RequestId, SessionDep, SettingsDep
from api_service.envelope import json_response, success_body
from api_service.errors import (
    AUTH_ERRORS,
    IDEMPOTENCY_ERRORS,
    DuplicateReference,
    InsufficientBalance,
    InvalidStatus,
    NotFound,
    ValidationFailed,
    error_responses,
)
from api_service.idempotency import IdempotencyDep, Prepared, answered_by_its_own_work
from api_service.pagination import PageNumber, PageSize, pagination_json, window_of
from api_service.payouts import batch, service
from api_service.payouts.schemas import (
    MERCHANT_REFERENCE_MAX_LENGTH,
    CreatePayoutBatchRequest,
    CreatePayoutRequest,
    PayoutBatchEnvelope,
    PayoutEnvelope,
    PayoutListEnvelope,
    PayoutListFilters,
)
from api_service.request_body import (
    documented_body,
    parse_items_leniently,
    read_body,
    read_json,
    require_json,
)
from api_service.schemas import PayoutIdPath, QueryText, TimestampIn, TimestampUpTo
from contracts.clock import MerchantTime
from contracts.db.models import Payout
from contracts.domain.statuses import PayoutStatus
from contracts.payout_queue import QueueExpiry
from contracts.payout_view import PayoutView
from contracts.settings import Settings

log = logging.getLogger("api.payouts")

router = APIRouter(prefix="/payouts", tags=["payouts"])
# A payroll's items are judged one by one: a flaw of the JSON parser's in one refuses that item.
_payroll_items = partial(parse_items_leniently, items="payouts")


def _queue_expiry(settings: Settings) -> QueueExpiry:
    """A queued payout's wait: on its merchant's sandbox clock in test mode, real time in
    production."""
    time = MerchantTime.of(settings)
    return QueueExpiry(settings.queued_expiry, time)


def payout_json(payout: Payout) -> dict[str, Any]:
    return PayoutView.of(payout).model_dump(mode="json", by_alias=True)


@router.post(
    "",
    status_code=201,
    response_model=PayoutEnvelope,
    responses=error_responses(
        *AUTH_ERRORS, *IDEMPOTENCY_ERRORS, DuplicateReference, InsufficientBalance
    ),
    summary="Create a payout (funds are held at once, or it is QUEUED with queueIfLowBalance)",
    description=(
        "The payout is PENDING with its amount held. When the available balance is short: 422 "
        "INSUFFICIENT_BALANCE, or with `queueIfLowBalance: true` the payout is created QUEUED "
        "(nothing held, event `payout.queued`); a top-up or a released hold starts queued "
        "payouts oldest first (PENDING, held, event `payout.dequeued`); one not started within "
        "72 hours of your sandbox time fails with QUEUE_EXPIRED."
    ),
    openapi_extra=documented_body(CreatePayoutRequest),
)
async def create_payout(
    request: Request,
    merchant: CurrentMerchant,
    idempotency: IdempotencyDep,
    session: SessionDep,
    request_id: RequestId,
    settings: SettingsDep,
) -> Response:
    stored: Payout | None = None  # the payout this request's work stored, if it ran

    async def prepare() -> Prepared:
        nonlocal stored
        stored = None  # an attempt that ran again (a deadlock) forgets the one rolled back
        body, payout = await service.new_payout_of(session, merchant, await read_json(request))

        async def store() -> None:
            nonlocal stored
            await service.store_new_payouts(session, [payout], request_id=request_id)
            stored = payout

        async def store_or_queue() -> tuple[int, bytes]:
            nonlocal stored
            await service.store_new_payout_or_queue(
                session, payout, request_id=request_id, queue_expiry=_queue_expiry(settings)
            )
            stored = payout
            if payout.status == PayoutStatus.QUEUED:
                message = "Payout queued: the available balance is short"
                return 201, success_body(payout_json(payout), message)
            return 201, success_body(payout_json(payout), "Payout created")

        # Decided on the parsed body (a key may be spelled with escapes, or in UTF-16): with
        # the flag, the answer (PENDING or QUEUED) is known only once the balance has answered.
        if body.queue_if_low_balance:
            return store_or_queue
        return 201, success_body(payout_json(payout), "Payout created"), store

    response = await idempotency.run_prepared(request, session, prepare)
    # Committed (a replayed answer stored nothing, a refusal under the key is no 201).
    if stored is not None and answered_by_its_own_work(response, 201):
        log.info(
            "payout created",
            extra={"payout_id": stored.id, "status": stored.status},
        )
    return response


@router.post(
    "/batch",
    response_model=PayoutBatchEnvelope,
    responses=error_responses(
        *AUTH_ERRORS, *IDEMPOTENCY_ERRORS, DuplicateReference, InsufficientBalance
    ),
    summary="Create up to 1,000 payouts at once (a payroll): one result per item",
    description=(
        "Each item is the body of `POST /payouts`. Its result is `created` (with the payout), "
        "`duplicate` (its merchantReference already names a payout: `payoutId`; a payroll sent "
        "twice creates nothing twice) or `invalid` (`errors` name the fields; an item the "
        "available balance no longer covers, in the order sent, is invalid on `amount`, or "
        "created QUEUED when it has `queueIfLowBalance: true`). The "
        "created payouts are written in one transaction; the request as a whole is idempotent "
        "under its X-IDEMPOTENCY-KEY. Bodies up to 1 MiB."
    ),
    openapi_extra=documented_body(CreatePayoutBatchRequest),
)
async def create_payout_batch(
    request: Request,
    merchant: CurrentMerchant,
    idempotency: IdempotencyDep,
    session: SessionDep,
    request_id: RequestId,
    settings: SettingsDep,
) -> Response:
    judgements = 0
    summary: dict[str, int] | None = None  # of the work this request ran, if it ran

    async def operation() -> tuple[int, bytes]:
        nonlocal judgements, summary
        judgements += 1
        summary = None  # an attempt that ran again (a deadlock) forgets the one rolled back
        body = await read_body(request, CreatePayoutBatchRequest, parse=_payroll_items)
        results = await batch.create_batch(
            session,
            merchant,
            body.payouts,
            request_id=request_id,
            queue_expiry=_queue_expiry(settings),
            balance_locked_first=judgements > 1,  # the first one went stale
        )
        summary = results["summary"]
        return 200, success_body(results)

    response = await idempotency.run(request, session, operation)
    if summary is not None and answered_by_its_own_work(response, 200):
        log.info(
            "payroll: %d payouts created, %d duplicate, %d invalid",
            summary["created"],
            summary["duplicate"],
            summary["invalid"],
            extra={"payouts_created": summary["created"]},
        )
    return response


@router.get(
    "",
    response_model=PayoutListEnvelope,
    responses=error_responses(*AUTH_ERRORS),
    summary="List payouts, newest first (page/limit or startingAfter cursor)",
)
async def list_payouts(
    merchant: CurrentMerchant,
    session: SessionDep,
    page: PageNumber = None,
    limit: PageSize = 20,
    starting_after: Annotated[
        QueryText | None, Query(alias="startingAfter", min_length=1, max_length=36)
    ] = None,
    status: PayoutStatus | None = None,
    created_from: Annotated[
        TimestampIn | None,
        Query(alias="createdFrom", description="Created at or after this time (ISO-8601)"),
    ] = None,
    created_to: Annotated[
        TimestampUpTo | None,
        Query(
            alias="createdTo",
            description=(
                "Created at or before the end of what this names, to its precision: a date alone "
                "is the whole day (UTC), `10:00:05Z` the whole second"
            ),
        ),
    ] = None,
    merchant_reference: Annotated[
        QueryText | None,
        Query(alias="merchantReference", min_length=1, max_length=MERCHANT_REFERENCE_MAX_LENGTH),
    ] = None,
) -> Response:
    if created_from and created_to and created_from > created_to:
        raise ValidationFailed.on("createdFrom", "is after createdTo: the range holds nothing")
    filters = PayoutListFilters(
        status=status,
        created_from=created_from,
        created_to=created_to,
        merchant_reference=merchant_reference,
    )
    window = await window_of(
        session,
        page=page,
        starting_after=starting_after,
        limit=limit,
        cursor_key=service.payout_cursor(merchant),
        items="payouts",
    )
    listed = await service.list_payouts(session, merchant, filters, window)
    payouts: list[Payout] = listed.firsts()
    pagination = pagination_json(listed, window, payouts[-1].id if payouts else None)
    data = {"payouts": [payout_json(p) for p in payouts], "pagination": pagination}
    return json_response(success_body(data))


@router.get(
    "/{payout_id}",
    response_model=PayoutEnvelope,
    responses=error_responses(*AUTH_ERRORS, NotFound),
    summary="Get a payout",
)
async def get_payout(
    merchant: CurrentMerchant, payout_id: PayoutIdPath, session: SessionDep
) -> Response:
    payout = await service.find_payout(session, payout_id, merchant_id=merchant.id)
    return json_response(success_body(payout_json(payout)))


@router.post(
    "/{payout_id}/reinitiate",
    response_model=PayoutEnvelope,
    responses=error_responses(
        *AUTH_ERRORS, *IDEMPOTENCY_ERRORS, NotFound, InvalidStatus, InsufficientBalance
    ),
    summary="Retry a FAILED payout: funds are held again and it goes back to PENDING",
)
async def reinitiate_payout(
    request: Request,
    merchant: CurrentMerchant,
    payout_id: PayoutIdPath,
    idempotency: IdempotencyDep,
    session: SessionDep,
    request_id: RequestId,
) -> Response:
    async def operation() -> tuple[int, bytes]:
        require_json(request, await request.body())  # it takes no body, but a labelled one
        payout = await service.reinitiate_payout(
            session, merchant, payout_id, request_id=request_id
        )
        return 200, success_body(payout_json(payout), "Payout reinitiated")

    return await idempotency.run(request, session, operation)
