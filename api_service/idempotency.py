"""Idempotent POSTs: scope (merchant, key); method + path + body hash; 4xx stored, 5xx not (the
client may retry).

One transaction per request: the key's row is its first write, the work follows, the answer is
stored with it and all of it commits together. A concurrent request with the same key waits on
that row's lock (at most the API's lock-wait limit, then 409 IDEMPOTENCY_KEY_IN_USE) and replays
the answer once the first commits, or runs if the first rolled back; in the same API process, it
waits first in memory, holding no connection (keys_in_flight). A request that dies takes
its claim with it: there is never a claim to take over, nor one to release. A refusal of the work
(a 4xx) rolls back to a savepoint taken after the claim and is stored under it: the key is held
from its claim to its stored answer.
"""

import asyncio
import hashlib
import json
import random
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from operator import itemgetter
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Request
from sqlalchemy import Integer, bindparam, delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from api_service.deps import (
    CurrentMerchant,
    SettingsDep,
    api_key_header,
    get_session_factory,
    header_is_repeated,
)
from api_service.envelope import error_body, json_response
from api_service.errors import (
    ApiError,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    IdempotencyQuotaExceeded,
    InvalidIdempotencyKey,
    JudgedOnStaleState,
    MissingIdempotencyKey,
    OutcomeNotAppliedYet,
    UnsupportedMediaType,
)
from api_service.keys_in_flight import KeysInFlight
from api_service.request_body import json_document
from api_service.sealed_responses import ResponseSeal
from api_service.usage_limits import KeyQuota
from contracts.db.engine import DATABASE_NOW, SessionFactory, database_now_plus
from contracts.db.models import IdempotencyKey, table_of
from contracts.db.outages import DEADLOCK, LOCK_REFUSED, LOCK_WAIT_TIMEOUT, database_error_code

Operation = Callable[[], Awaitable[tuple[int, bytes]]]
Answer = TypeVar("Answer")
# What a request does, known once its body is read: the answer (status, body) and the work that
# makes it true, or, when the work decides the answer, that work (an Operation).
Prepared = tuple[int, bytes, Callable[[], Awaitable[None]]] | Operation
Prepare = Callable[[], Awaitable[Prepared]]
REPLAYED_HEADER = "Idempotent-Replayed"


def answered_by_its_own_work(response: Response, status: int) -> bool:
    """Whether `response` is the `status` this request's own work committed, not an answer
    replayed under its key (stored by another request, or by another process while this one's
    attempt rolled back): what a line saying the work was done may be written for."""
    return response.status_code == status and response.headers.get(REPLAYED_HEADER) != "true"


def request_fingerprint(body: bytes) -> str:
    """SHA-256 of the canonical JSON body (key order and spacing do not matter). A body that is
    not JSON, or gives a key twice, counts as sent: its 400 must not be replayed for the
    corrected body under the same key."""
    try:
        canonical = canonical_json(json_document(body)).encode()
    except (ValueError, RecursionError):  # not a document; nested deeper than we render
        canonical = body
    return hashlib.sha256(canonical).hexdigest()


FINGERPRINT_STATE = "request_fingerprint"


async def fingerprint_of(request: Request) -> str:
    """The request's fingerprint, kept in its state: the request log records it, and the
    readiness report tells a retry of the same request from another request by it."""
    fingerprint = request_fingerprint(await request.body())
    request.scope["state"][FINGERPRINT_STATE] = fingerprint
    return fingerprint


_string = json.encoder.encode_basestring_ascii  # json.dumps's own (C) string encoder
_key = itemgetter(0)


def canonical_json(node: Any) -> str:
    """`json.dumps(node, sort_keys=True, separators=(",", ":"))`, byte for byte, but with a
    Decimal as the bare number it was sent as: rendered as a string (`default=str`), `1.5`
    and `"1.5"` had one fingerprint, and a 400 was replayed as the other's 201."""
    if isinstance(node, str):
        return _string(node)
    if isinstance(node, dict):  # keys are unique (each_key_once): sorting never compares values
        items = sorted(node.items(), key=_key)
        return "{" + ",".join(f"{_string(k)}:{canonical_json(v)}" for k, v in items) + "}"
    if isinstance(node, list):
        return "[" + ",".join(map(canonical_json, node)) + "]"
    if isinstance(node, Decimal):
        return str(node)  # a JSON number: digits, point, exponent as parsed
    return json.dumps(node)  # int, true, false, null (NaN and Infinity as json.dumps spells them)


STALE_RETRIES = 3  # a batch judged again on a read another request's commit made stale
# A deadlock's victim runs again after a short random pause, for up to this long: a storm of
# copies of one reference that the balance refuses deadlocks the copies waiting on it round after
# round (three retries answered 503 with the database up).
DEADLOCK_RETRY_SECONDS = 10.0
MAX_DEADLOCK_PAUSE_SECONDS = 0.05


async def run_again_after_deadlocks(
    attempt: Callable[[], Awaitable[Answer]], *, roll_back: Callable[[], Awaitable[None]]
) -> Answer:
    """Run `attempt`, and again when InnoDB picked it as a deadlock's victim (e.g. two requests
    that waited on one key whose first insert rolled back: InnoDB rolled the whole transaction
    back, and `roll_back` ends it), after a short random pause, for up to
    DEADLOCK_RETRY_SECONDS."""
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + DEADLOCK_RETRY_SECONDS
    deadlocks = 0
    while True:
        try:
            return await attempt()
        except OperationalError as error:
            if database_error_code(error) != DEADLOCK or loop.time() >= give_up_at:
                raise
            await roll_back()
            deadlocks += 1  # the copies spread out: the next round deadlocks fewer of them
            pause = min(MAX_DEADLOCK_PAUSE_SECONDS, 0.002 * 2 ** min(deadlocks, 5))
            await asyncio.sleep(random.uniform(0, pause))


async def _retrying_lost_races(
    attempt: Operation,
    *,
    commit: Callable[[], Awaitable[None]],
    roll_back: Callable[[], Awaitable[None]],
    undo_the_work: Callable[[], Awaitable[None]],
) -> tuple[int, bytes]:
    """Run `attempt` and `commit`; again when it lost a race that running it again settles: a
    deadlock (`run_again_after_deadlocks`; e.g. two creates that waited on one reference whose
    first insert rolled back), or its work was judged on a read that another request's commit
    made stale (JudgedOnStaleState: `undo_the_work` undoes its writes and keeps what it
    claimed)."""

    async def committed() -> tuple[int, bytes]:
        answer = await attempt()
        await commit()
        return answer

    stale_judgements = 0
    while True:
        try:
            return await run_again_after_deadlocks(committed, roll_back=roll_back)
        except JudgedOnStaleState as stale:
            stale_judgements += 1
            if stale_judgements > STALE_RETRIES:
                raise stale.refusal from stale
            await undo_the_work()


class Replay(Exception):
    """The key has an answer already: this request replays it instead of running."""

    def __init__(self, response: Response) -> None:
        super().__init__("replay")
        self.response = response


# Refusals never stored under this key: those of the key's other use, of the quota, of the
# body's Content-Type (not in the fingerprint: the body sent again labelled as JSON must run),
# and of a state about to change by itself (a FAILED outcome the processor has yet to apply).
NOT_STORED = (
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    IdempotencyQuotaExceeded,
    UnsupportedMediaType,
    OutcomeNotAppliedYet,
)


# The statements of every keyed request, built once (bind parameters `b_*` only) so that a request
# neither rebuilds them nor walks them for their cache key. An operator's keyed top-up
# (cli.merchants.claim_top_up_key) writes, finds and forgets its key with the same ones.
_KEYS = table_of(IdempotencyKey)
CLAIM_KEY = insert(_KEYS).values(
    merchant_id=bindparam("b_merchant"),
    key=bindparam("b_key"),
    method=bindparam("b_method"),
    path=bindparam("b_path"),
    request_hash=bindparam("b_request_hash"),
    status_code=bindparam("b_status_code", type_=_KEYS.c.status_code.type),
    response_body=bindparam("b_response_body", type_=_KEYS.c.response_body.type),
    locked_at=DATABASE_NOW,
    created_at=DATABASE_NOW,
    expires_at=database_now_plus(bindparam("b_ttl_seconds", type_=Integer)),
)
_THIS_KEY = (_KEYS.c.merchant_id == bindparam("b_merchant"), _KEYS.c.key == bindparam("b_key"))
_STORE = (
    update(_KEYS)
    .where(*_THIS_KEY)
    .values(
        status_code=bindparam("b_status_code", type_=_KEYS.c.status_code.type),
        response_body=bindparam("b_response_body", type_=_KEYS.c.response_body.type),
    )
)
FIND_KEY = select(IdempotencyKey, (_KEYS.c.expires_at <= DATABASE_NOW).label("expired")).where(
    *_THIS_KEY
)
FORGET_EXPIRED_KEY = delete(_KEYS).where(*_THIS_KEY, _KEYS.c.expires_at <= DATABASE_NOW)
# Whether another request holds the key's row, asked without waiting (see _key_held).
KEY_HELD = select(_KEYS.c.key).where(*_THIS_KEY).with_for_update(nowait=True)
# Taken after the claim, before the work; a COMMIT releases it. Rolling the whole transaction back
# on a refusal let a request with the same key and another body take the key and run before the
# refusal was stored under it (and the refused request's own client got IDEMPOTENCY_KEY_REUSED).
_BEFORE_THE_WORK = text("SAVEPOINT before_the_work")
_UNDO_THE_WORK = text("ROLLBACK TO SAVEPOINT before_the_work")


@dataclass
class Idempotency:
    key: str
    merchant_id: str
    method: str
    path: str
    request_id: str
    sessions: SessionFactory
    ttl_seconds: int
    quota: KeyQuota
    seal: ResponseSeal
    in_flight: KeysInFlight
    # What the claim's quota count added to the shared counter, until its transaction ends.
    _counted: int | None = field(default=None, init=False)
    # The transaction holds the key's claim and a savepoint after it: a refusal is stored in it.
    _claimed_for_work: bool = field(default=False, init=False)

    async def run(
        self, request: Request, session: AsyncSession, operation: Operation, *, sealed: bool = False
    ) -> Response:
        """Claim the key, run `operation` (which must not commit), store its answer: one
        transaction. `sealed`: the answer carries a secret, stored encrypted under the API key."""
        fingerprint = await fingerprint_of(request)

        async def attempt() -> tuple[int, bytes]:
            return await self._answer_after(session, fingerprint, operation, sealed=sealed)

        return await self._one_transaction(session, fingerprint, attempt)

    async def run_prepared(
        self, request: Request, session: AsyncSession, prepare: Prepare
    ) -> Response:
        """For an answer known before the work (a create): the key's row is written with the
        answer in it, so storing it costs no statement of its own. `prepare` may instead give
        back an Operation (the answer depends on the work), run as `run` runs it."""
        fingerprint = await fingerprint_of(request)

        async def attempt() -> tuple[int, bytes]:
            prepared = await prepare()
            if not isinstance(prepared, tuple):
                return await self._answer_after(session, fingerprint, prepared)
            status_code, body, work = prepared
            await self._claim_for_work(session, fingerprint, answer=(status_code, body))
            await work()
            return status_code, body

        return await self._one_transaction(session, fingerprint, attempt)

    async def _answer_after(
        self, session: AsyncSession, fingerprint: str, operation: Operation, *, sealed: bool = False
    ) -> tuple[int, bytes]:
        """Claim the key, run `operation`, then store its answer."""
        await self._claim_for_work(session, fingerprint, answer=None)
        status_code, body = await operation()
        await self._store(session, status_code, self.seal.seal(body) if sealed else body)
        return status_code, body

    async def _one_transaction(
        self, session: AsyncSession, fingerprint: str, attempt: Operation
    ) -> Response:
        async def release_the_connection() -> None:
            if session.in_transaction():  # reads before the claim (e.g. the merchant's key)
                await session.commit()

        key_of_merchant = (self.merchant_id, self.key)
        async with self.in_flight.first(key_of_merchant, before_waiting=release_the_connection):
            return await self._run_once(session, fingerprint, attempt)

    async def _run_once(
        self, session: AsyncSession, fingerprint: str, attempt: Operation
    ) -> Response:
        try:
            status_code, body = await _retrying_lost_races(
                attempt,
                commit=partial(self._count_and_commit, session),
                roll_back=partial(self._roll_back, session),
                undo_the_work=partial(self._undo_the_work, session),
            )
        except Replay as replay:
            await self._roll_back(session)
            return replay.response
        except NOT_STORED:
            await self._roll_back(session)
            raise
        except ApiError as error:
            if error.status_code >= 500:
                await self._roll_back(session)
                raise
            refusal = error_body(error.code, error.message, self.request_id, error.details)
            if self._claimed_for_work:
                return await self._refuse_under_the_claim(session, error, refusal)
            await self._roll_back(session)  # refused before the claim: nothing held
            return await self._store_refusal(fingerprint, error, refusal)
        except BaseException:
            # Also a failed commit: the claim goes with the work, so the client may retry.
            await self._roll_back(session)
            raise
        return json_response(body, status_code)

    async def _count_and_commit(self, session: AsyncSession) -> None:
        """Count the key claimed against the merchant's quota (IdempotencyQuotaExceeded when
        over), then commit: the last statement before the COMMIT, as the balance's move is, so
        the merchant's counter row is locked only that long. Counted at the claim, it was held
        through all of the work: the merchant's other keyed requests waited for it, and a 503
        answered those that waited past the lock-wait limit."""
        self._counted = await self.quota.count(session, self.merchant_id)
        await session.commit()

    async def _roll_back(self, session: AsyncSession) -> None:
        """End the transaction that claimed the key: its count against the quota goes with it
        (the key is stored only if a refusal's transaction claims it again)."""
        await session.rollback()
        self._claimed_for_work = False
        if self._counted is not None:
            self.quota.uncount(self.merchant_id, added=self._counted)
            self._counted = None

    async def _undo_the_work(self, session: AsyncSession) -> None:
        """The work's writes undone; the key, if claimed, stays claimed (rolling the claim back
        with them let a request with the same key and another body take the key and run
        between a payroll's two judgements, and the payroll was answered KEY_REUSED)."""
        if not self._claimed_for_work:
            await self._roll_back(session)
            return
        await session.execute(_UNDO_THE_WORK)
        session.expunge_all()  # objects the work added or changed: never to be flushed

    def _this_key(self) -> dict[str, str]:
        """The parameters of _THIS_KEY: this merchant's row of this key."""
        return {"b_merchant": self.merchant_id, "b_key": self.key}

    async def _claim(
        self, session: AsyncSession, fingerprint: str, *, answer: tuple[int, bytes] | None
    ) -> None:
        """The key's row as the transaction's first write; Replay when the key has an answer.

        A request still running with this key holds the row's lock: the INSERT waits for it to
        finish (then replays its answer) for at most the API's lock-wait limit (then 409)."""
        for _ in range(2):
            try:
                await session.execute(
                    CLAIM_KEY,
                    self._this_key()
                    | {
                        "b_method": self.method,
                        "b_path": self.path,
                        "b_request_hash": fingerprint,
                        "b_status_code": answer[0] if answer else None,
                        "b_response_body": answer[1] if answer else None,
                        "b_ttl_seconds": self.ttl_seconds,
                    },
                )
            except IntegrityError:
                await session.rollback()
            except OperationalError as error:
                code = database_error_code(error)
                if code == LOCK_WAIT_TIMEOUT and await self._key_held(session):
                    raise IdempotencyKeyInUse from error
                if code != DEADLOCK:
                    raise
                # Copies of a request inserting the key at once: InnoDB's duplicate-insert
                # deadlock. Its victim is rolled back whole (the claim is its first write) and
                # looks for the answer like a copy that found the key taken.
                await session.rollback()
            else:
                return
            if await self._replay_or_forget(session, fingerprint):
                continue
        raise IdempotencyKeyInUse

    async def _key_held(self, session: AsyncSession) -> bool:
        """Whether a claim that waited out the lock-wait limit waited on another request holding
        this key (then 409), not on the merchant's row, which the key's foreign key reads: held
        for update by a webhook-secret rotation, say, it made a key no request ever sent "in
        use" (the claim's timeout then stands: a 503, as for any row another request holds)."""
        try:
            await session.execute(KEY_HELD, self._this_key())
        except OperationalError as error:
            if database_error_code(error) in LOCK_REFUSED:
                return True
            raise
        return False

    async def _claim_for_work(
        self, session: AsyncSession, fingerprint: str, *, answer: tuple[int, bytes] | None
    ) -> None:
        if self._claimed_for_work:  # the work runs again (_undo_the_work): the claim is held
            if answer is not None:
                await self._store(session, *answer)
            return
        await self._claim(session, fingerprint, answer=answer)
        await session.execute(_BEFORE_THE_WORK)
        self._claimed_for_work = True

    async def _replay_or_forget(self, session: AsyncSession, fingerprint: str) -> bool:
        """Replay (raised) the key's answer; True when the key was gone or expired (forgotten
        now), so the caller may claim it again."""
        found = (await session.execute(FIND_KEY, self._this_key())).one_or_none()
        if found is None:
            return True
        existing, expired = found
        if expired:
            await self._forget_expired(session)
            return True
        if (existing.method, existing.path, existing.request_hash) != (
            self.method,
            self.path,
            fingerprint,
        ):
            raise IdempotencyKeyReused
        if existing.status_code is None or existing.response_body is None:
            raise IdempotencyKeyInUse  # a claim stored without its answer by an older version
        raise Replay(
            json_response(
                self.seal.unseal(existing.response_body),
                existing.status_code,
                {REPLAYED_HEADER: "true"},
            )
        )

    async def _forget_expired(self, session: AsyncSession) -> None:
        """Delete the key's expired row. Another request holding it (a copy that forgot it first
        and runs under its new claim) makes the DELETE wait, past the lock-wait limit a 409 as
        the claim's own wait is: the timeout escaped, a 503 with the database up."""
        try:
            await session.execute(FORGET_EXPIRED_KEY, self._this_key())
        except OperationalError as error:
            if database_error_code(error) != LOCK_WAIT_TIMEOUT:
                raise
            await session.rollback()
            raise IdempotencyKeyInUse from error
        await session.commit()

    async def _store(self, session: AsyncSession, status_code: int, body: bytes) -> None:
        await session.execute(
            _STORE,
            self._this_key() | {"b_status_code": status_code, "b_response_body": body},
        )

    async def _refuse_under_the_claim(
        self, session: AsyncSession, error: ApiError, body: bytes
    ) -> Response:
        """The work's writes undone, its refusal stored in the key's row, which stays claimed."""
        try:
            await self._undo_the_work(session)
            await self._store(session, error.status_code, body)
            await self._count_and_commit(session)
        except BaseException:
            await self._roll_back(session)
            raise
        self._claimed_for_work = False
        return json_response(body, error.status_code, error.headers)

    async def _store_refusal(self, fingerprint: str, error: ApiError, body: bytes) -> Response:
        """A 4xx refused before the key was claimed is stored on its own."""
        async with self.sessions() as session:
            try:
                await self._claim(session, fingerprint, answer=(error.status_code, body))
                await self._count_and_commit(session)
            except Replay as replay:  # another request with this key answered meanwhile
                return replay.response
            except BaseException:
                await self._roll_back(session)
                raise
        return json_response(body, error.status_code, error.headers)


_HEX = "[0-9a-f]"
_CANONICAL = f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}"
# The written forms of a UUID, in either case: 8-4-4-4-12, in braces, as a URN, or 32 digits.
# Not uuid.UUID's reading alone: it drops hyphens and `urn:`/`uuid:` anywhere and takes what
# int(text, 16) takes (`0x`, a sign, underscores), so two different keys could be one.
_UUID_FORMS = re.compile(
    f"{_CANONICAL}|{{{_CANONICAL}}}|urn:uuid:{_CANONICAL}|{_HEX}{{32}}", re.ASCII | re.IGNORECASE
)


def is_idempotency_key(text: str) -> bool:
    """One of the written forms of a UUID the API takes as a key."""
    return _UUID_FORMS.fullmatch(text) is not None


def canonical_key(text: str) -> str:
    """The key a written form names, one however it is written; a text that is no key, itself."""
    # uuid.UUID strips a lower-case urn:uuid: only.
    return str(uuid.UUID(text.lower())) if is_idempotency_key(text) else text


IDEMPOTENCY_HEADER = "X-IDEMPOTENCY-KEY"
IDEMPOTENCY_HEADER_DESCRIPTION = (
    "Required: a UUID, new for each operation; a retry with the same key and request gets the "
    "first response back. Read in either case, and in braces, as a urn:uuid: or as 32 digits "
    "without hyphens: one key however it is written. Missing → 400 MISSING_IDEMPOTENCY_KEY; "
    "not a UUID, or the header given twice → 400 INVALID_IDEMPOTENCY_KEY."
)


async def get_idempotency(
    request: Request,
    merchant: CurrentMerchant,
    api_key: Annotated[str | None, Depends(api_key_header)],
    settings: SettingsDep,
    sessions: Annotated[SessionFactory, Depends(get_session_factory)],
    # Optional here so that its absence is answered by this dependency (400
    # MISSING_IDEMPOTENCY_KEY), not by FastAPI (422); the OpenAPI document marks it required.
    key: Annotated[
        str | None,
        Header(alias=IDEMPOTENCY_HEADER, description=IDEMPOTENCY_HEADER_DESCRIPTION),
    ] = None,
) -> Idempotency:
    if not key:
        raise MissingIdempotencyKey
    if header_is_repeated(request, IDEMPOTENCY_HEADER):
        raise InvalidIdempotencyKey(f"{IDEMPOTENCY_HEADER} is given more than once")
    if not is_idempotency_key(key):
        raise InvalidIdempotencyKey
    return Idempotency(
        key=canonical_key(key),
        merchant_id=merchant.id,
        method=request.method,
        # Lower-cased: the only parts of a path that may be written in either case are its ids
        # (UUIDs, matched in any case), so a retry naming the payout in the other case is the
        # same request, replayed, not IDEMPOTENCY_KEY_REUSED.
        path=request.url.path.lower(),
        request_id=str(request.state.request_id),
        sessions=sessions,
        ttl_seconds=settings.idempotency_ttl_seconds,
        quota=request.app.state.key_quota,
        in_flight=request.app.state.keys_in_flight,
        seal=ResponseSeal.for_api_key(api_key or ""),
    )


IdempotencyDep = Annotated[Idempotency, Depends(get_idempotency)]
