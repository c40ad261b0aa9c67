"""`payouts secrets reseal`: every merchant's webhook secrets sealed again with the first of
PAYOUTS_SECRETS_KEYS (contracts.secrets_at_rest), after a new key was put first, or after an
older API stored one unsealed during a rolling upgrade. Run it with every key that sealed a
stored secret still in PAYOUTS_SECRETS_KEYS; then the old keys can go."""

from collections import Counter

import typer
from sqlalchemy import String, or_, select, type_coerce, update
from sqlalchemy.ext.asyncio import AsyncSession

from cli.services import refuse_to_start_unsafe
from contracts.db.models import Merchant
from contracts.db.sealed import keyring
from contracts.secrets_at_rest import SEALED_PREFIX, SecretsKeyError
from contracts.settings import get_settings

secrets_app = typer.Typer(help="Merchants' webhook secrets, sealed at rest.", no_args_is_help=True)

BATCH = 500
UNSEALED = "unsealed"


async def reseal_batch(session: AsyncSession) -> Counter[str]:
    """Up to BATCH merchants with a secret the sealing key did not seal, locked (a secret
    rotated meanwhile is not overwritten) and sealed again: how many secrets, by the key that
    had sealed them. Empty when none is left."""
    sealing_key_id = keyring().sealing_key_id
    sealed_now = f"{SEALED_PREFIX}:{sealing_key_id}:%"
    stored_secret = type_coerce(Merchant.webhook_secret, String).label("stored_secret")
    stored_previous = type_coerce(Merchant.previous_webhook_secret, String).label("stored_previous")
    rows = await session.execute(
        select(
            Merchant.id,
            Merchant.webhook_secret,
            Merchant.previous_webhook_secret,
            stored_secret,
            stored_previous,
        )
        .where(
            or_(
                stored_secret.not_like(sealed_now),
                stored_previous.is_not(None) & stored_previous.not_like(sealed_now),
            )
        )
        .order_by(Merchant.id)
        .limit(BATCH)
        .with_for_update()
    )
    resealed: Counter[str] = Counter()
    for merchant_id, secret, previous, stored, stored_before in rows:
        await session.execute(
            update(Merchant)
            .where(Merchant.id == merchant_id)
            .values(webhook_secret=secret, previous_webhook_secret=previous)
        )
        for value in (stored, stored_before):
            sealed_by = None if value is None else keyring().sealed_by(value) or UNSEALED
            if sealed_by not in (None, sealing_key_id):
                resealed[sealed_by] += 1
    return resealed


@secrets_app.command("reseal")
def reseal_command() -> None:
    """Seal every stored webhook secret with the first of PAYOUTS_SECRETS_KEYS."""
    from cli.main import run_in_transaction  # cli.main imports this module

    refuse_to_start_unsafe("secrets reseal", get_settings().require_own_secrets_key_in_production)
    resealed: Counter[str] = Counter()
    try:
        while batch := run_in_transaction(reseal_batch):
            resealed += batch
    except SecretsKeyError as unopened:
        typer.echo(f"payouts: {unopened}", err=True)
        raise typer.Exit(1) from unopened
    by_key = ", ".join(f"{count} from {key}" for key, count in sorted(resealed.items()))
    typer.echo(
        f"{resealed.total()} webhook secrets sealed with key {keyring().sealing_key_id}"
        + (f" ({by_key})" if by_key else "")
    )
