"""Operator tasks on merchants (the demo merchant, create, top up, deactivate, activate)."""

import base64
import binascii
import hashlib
import re
import unicodedata
import uuid
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api_service.dashboard.sessions import close_merchant_sessions
from api_service.idempotency import (
    CLAIM_KEY,
    FIND_KEY,
    FORGET_EXPIRED_KEY,
    run_again_after_deadlocks,
)
from contracts import ledger
from contracts.api_keys import API_KEY_PREFIX, hash_api_key, new_api_key, new_webhook_secret
from contracts.clock import MerchantTime
from contracts.db.engine import utcnow
from contracts.db.models import WITH_WEBHOOK_SECRETS, Balance, IdempotencyKey, Merchant, Payout
from contracts.db.sealed import MAX_SECRET_LENGTH
from contracts.domain.money import format_amount
from contracts.funding import start_queued_on_time

DEMO_MERCHANT_NAME = "Demo Merchant"


def is_the_demo_merchants_name(name: str) -> bool:
    """Whether the database takes `name` for the demo merchant's: its default collation ignores
    case and accents. A merchant so named, made by `merchant create`, became the demo merchant
    once the demo merchant was deactivated: the next `up`'s seed pointed its webhooks at the
    demo sink, and gave it the deployment's webhook secret (scale review)."""
    return _folded(name) == _folded(DEMO_MERCHANT_NAME)


def _folded(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(char for char in decomposed if not unicodedata.combining(char)).strip()


_API_KEY_SHAPE = re.compile(rf"{API_KEY_PREFIX}[A-Za-z0-9_-]{{43,}}")
_WEBHOOK_SECRET_PREFIX = "whsec_"


@dataclass(frozen=True)
class NewMerchant:
    merchant_id: str
    api_key: str
    webhook_secret: str

    def as_json(self) -> dict[str, str]:
        return {
            "merchantId": self.merchant_id,
            "apiKey": self.api_key,
            "webhookSecret": self.webhook_secret,
        }


async def create_merchant(
    session: AsyncSession,
    *,
    name: str,
    balance: Decimal,
    webhook_url: str | None,
    api_key: str | None = None,
    webhook_secret: str | None = None,
) -> NewMerchant:
    """A merchant, its balance row, and an opening top-up journal when balance > 0. The API key
    and webhook secret are new ones unless given (see `ensure_demo_merchant`)."""
    api_key = api_key or new_api_key()
    merchant = Merchant(
        id=str(uuid.uuid4()),
        name=name,
        api_key_hash=hash_api_key(api_key),
        is_active=True,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret or new_webhook_secret(),
        created_at=utcnow(),
    )
    session.add(merchant)
    await session.flush()  # no ORM relationships: insert the parent first
    session.add(
        Balance(
            merchant_id=merchant.id,
            currency="PKR",
            available=Decimal("0.00"),
            held=Decimal("0.00"),
            version=0,
            updated_at=utcnow(),
        )
    )
    await session.flush()
    if balance > 0:
        await ledger.top_up(session, merchant_id=merchant.id, amount=balance)
    return NewMerchant(merchant.id, api_key, merchant.webhook_secret)


async def merchant_exists(session: AsyncSession, merchant_id: str) -> bool:
    return await session.scalar(select(Merchant.id).where(Merchant.id == merchant_id)) is not None


async def deactivate_merchant(session: AsyncSession, merchant_id: str) -> bool:
    """Suspend the merchant: its API key refused (401 `INVALID_API_KEY`; by each API process
    within PAYOUTS_API_KEY_CACHE_SECONDS), its dashboard sessions ended, its QUEUED payouts kept
    from starting (`start_queued_payouts`). What it has in flight goes on: payouts accepted go
    to the PSP, outcomes and reversals apply, webhooks are delivered, queued payouts expire.
    False: no such merchant."""

    async def deactivate() -> bool:
        if not await _set_active(session, merchant_id, active=False):
            return False
        await close_merchant_sessions(session, merchant_id)
        return True

    return await run_again_after_deadlocks(deactivate, roll_back=session.rollback)


async def activate_merchant(
    session: AsyncSession, merchant_id: str, *, time: MerchantTime
) -> list[Payout] | None:
    """The merchant's key works again, and its queue goes on where it stopped: first the
    expiries due by its clock (as the scheduler applies them), then the queued payouts the
    available balance covers start, oldest first. Those started; None: no such merchant."""

    async def activate() -> list[Payout] | None:
        if not await _set_active(session, merchant_id, active=True):
            return None
        return await start_queued_on_time(session, merchant_id, time=time)

    return await run_again_after_deadlocks(activate, roll_back=session.rollback)


async def _set_active(session: AsyncSession, merchant_id: str, *, active: bool) -> bool:
    """The merchant's flag, set under its balance row (the queue's lock) taken first, as a
    top-up or a released hold takes it before its journal's foreign key takes a shared lock on
    the merchant's row (updated first, the activation deadlocked with them: diff review). A
    create, or a top-up with a key, holds that shared lock before the balance row (its inserts'
    foreign keys): either order deadlocks with one kind, so the callers run again after a
    deadlock (second diff review). False: no such merchant."""
    if not await merchant_exists(session, merchant_id):
        return False
    await ledger.lock_balance(session, merchant_id=merchant_id)
    await session.execute(
        update(Merchant).where(Merchant.id == merchant_id).values(is_active=active)
    )
    return True


async def as_stored_now(session: AsyncSession, saved: NewMerchant) -> NewMerchant | None:
    """The merchant saved earlier with its webhook secret as it is now (rotated since, maybe),
    or None: it is gone, deactivated, or its API key was replaced (`payouts seed --api-key`)."""
    stored = (
        await session.execute(
            select(Merchant.api_key_hash, Merchant.is_active, Merchant.webhook_secret).where(
                Merchant.id == saved.merchant_id
            )
        )
    ).first()
    if stored is None or not stored.is_active or stored.api_key_hash != hash_api_key(saved.api_key):
        return None
    return NewMerchant(saved.merchant_id, saved.api_key, stored.webhook_secret)


@dataclass(frozen=True)
class DemoMerchant:
    merchant_id: str
    created: bool
    # A key this run made (a new merchant, no key given): shown once, as only its digest is
    # stored. None when the key was given, or the merchant existed and keeps its own.
    new_api_key: str | None

    def as_json(self) -> dict[str, str | bool | None]:
        return {"merchantId": self.merchant_id, "created": self.created, "apiKey": self.new_api_key}


def check_demo_credentials(api_key: str | None, webhook_secret: str | None) -> None:
    """Raise ValueError unless a given key looks like one the API hands out and a given secret
    is `whsec_<base64>`: anything else would be stored, then never match or sign."""
    if api_key is not None and not _API_KEY_SHAPE.fullmatch(api_key):
        raise ValueError(f"an API key is {API_KEY_PREFIX} and at least 43 url-safe characters")
    if webhook_secret is not None:
        check_webhook_secret(webhook_secret)


def check_webhook_secret(webhook_secret: str) -> None:
    """Raise ValueError unless the secret is `whsec_<base64 of 24 to 64 bytes>` (Standard
    Webhooks: 192 to 512 bits; its padding may be left out, as the signer and the reference
    library add it), in at most MAX_SECRET_LENGTH characters (a longer one failed on the
    database, sealed)."""
    encoded = webhook_secret.removeprefix(_WEBHOOK_SECRET_PREFIX)
    try:
        decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        decoded = b""
    if (
        not webhook_secret.startswith(_WEBHOOK_SECRET_PREFIX)
        or not 24 <= len(decoded) <= 64
        or len(webhook_secret) > MAX_SECRET_LENGTH
    ):
        raise ValueError(
            "a webhook secret is whsec_ and the base64 of 24 to 64 bytes, "
            f"{MAX_SECRET_LENGTH} characters at most"
        )


class ApiKeyTaken(ValueError):
    """The API key given for the demo merchant is another merchant's."""


async def _refuse_a_key_of_another_merchant(
    session: AsyncSession, api_key: str, demo: Merchant | None
) -> None:
    """A key is one merchant's (a unique column): the seed died on an IntegrityError traceback.
    The demo merchant deactivated holding the deployment's key (compose gives the same one on
    every `up`) is named as such: it was "not the demo merchant's" (diff review). The key stays
    with it: a key that was suspended must not open a new merchant."""
    holder = (
        await session.execute(
            select(Merchant.id, Merchant.is_active).where(
                Merchant.api_key_hash == hash_api_key(api_key)
            )
        )
    ).first()
    if holder is None or (demo is not None and holder.id == demo.id):
        return
    if not holder.is_active:
        raise ApiKeyTaken(
            f"this API key is merchant {holder.id}'s, which is deactivated: activate it "
            f"(`payouts merchant activate {holder.id}`) or give another key"
        )
    raise ApiKeyTaken(f"this API key is merchant {holder.id}'s, not the demo merchant's")


async def ensure_demo_merchant(
    session: AsyncSession,
    *,
    balance: Decimal,
    webhook_url: str | None,
    api_key: str | None = None,
    webhook_secret: str | None = None,
    name: str = DEMO_MERCHANT_NAME,
) -> DemoMerchant:
    """The demo merchant, created on the first run and reused on every later one (compose runs
    the seed on every `up`): the oldest active merchant of that name. (A deactivated one, reused,
    was given the deployment's key, which every route then refused with 401, or was reported as
    keeping its key; `make run` had made a new one meanwhile.)

    A reused merchant keeps its balance. What the caller gives wins over what is stored: the
    webhook URL, and an API key or webhook secret given by the deployment (so that compose, which
    knows them, always has working credentials). Without them the stored ones stay."""
    check_demo_credentials(api_key, webhook_secret)
    existing = await session.scalar(
        select(Merchant)
        .options(WITH_WEBHOOK_SECRETS)
        .where(Merchant.name == name, Merchant.is_active.is_(True))
        .order_by(Merchant.created_at, Merchant.id)
        .limit(1)
    )
    if api_key is not None:
        await _refuse_a_key_of_another_merchant(session, api_key, existing)
    if existing is None:
        created = await create_merchant(
            session,
            name=name,
            balance=balance,
            webhook_url=webhook_url,
            api_key=api_key,
            webhook_secret=webhook_secret,
        )
        made = None if api_key else created.api_key
        return DemoMerchant(created.merchant_id, created=True, new_api_key=made)
    if webhook_url is not None:
        existing.webhook_url = webhook_url
    if api_key is not None and hash_api_key(api_key) != existing.api_key_hash:
        existing.api_key_hash = hash_api_key(api_key)
        await close_merchant_sessions(session, existing.id)  # signed in with the old key
    if webhook_secret is not None and webhook_secret != existing.webhook_secret:
        existing.webhook_secret = webhook_secret
        existing.previous_webhook_secret = None  # the deployment set it: no grace period
        existing.previous_secret_expires_at = None
        # When: the dashboard showed attempts signed before it as the new secret signs them.
        existing.secret_rotated_at = utcnow()
    return DemoMerchant(existing.id, created=False, new_api_key=None)


# The method and path a top-up's key is stored under, beside the API's keys of the merchant: the
# same key sent to the API is another request's (IDEMPOTENCY_KEY_REUSED), and the reverse.
OPERATOR_TOP_UP = ("CLI", "payouts merchant topup")


class KeyUsedForAnotherRequest(Exception):
    pass


async def claim_top_up_key(
    session: AsyncSession, merchant_id: str, key: str, amount: Decimal, *, ttl_seconds: int
) -> bool:
    """The merchant's idempotency `key` taken for a top-up of `amount`, for `ttl_seconds` (the
    API's keys' lifetime), in the caller's transaction (it commits with the top-up): True.
    False: a top-up of `amount` was made under it already (a copy run at once waits for the
    first to commit, then finds it). KeyUsedForAnotherRequest: it names another amount, or an
    API request. A key past its lifetime is free again, as the API's are."""
    method, path = OPERATOR_TOP_UP
    fingerprint = hashlib.sha256(format_amount(amount).encode()).hexdigest()
    this_key = {"b_merchant": merchant_id, "b_key": key}
    await session.execute(FORGET_EXPIRED_KEY, this_key)
    claimed = await session.execute(
        CLAIM_KEY.prefix_with("IGNORE"),
        {
            **this_key,
            "b_method": method,
            "b_path": path,
            "b_request_hash": fingerprint,
            "b_status_code": 200,
            "b_response_body": None,
            "b_ttl_seconds": ttl_seconds,
        },
    )
    if claimed.rowcount == 1:  # type: ignore[attr-defined]
        return True
    found = (await session.execute(FIND_KEY, this_key)).one_or_none()
    if found is not None:
        stored: IdempotencyKey = found[0]
        if (stored.method, stored.path, stored.request_hash) == (method, path, fingerprint):
            return False
    raise KeyUsedForAnotherRequest
