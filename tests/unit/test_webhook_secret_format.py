"""The `whsec_` secrets the CLI takes (PAYOUTS_DEMO_WEBHOOK_SECRET, `payouts seed`, `payouts
webhook-sink --secret`) are the ones Standard Webhooks defines: base64 of 24 to 64 random bytes
(192 to 512 bits), padded or not, as the signer and the reference library read them (signing
review: 65 bytes were taken, an unpadded secret refused)."""

import base64
import time

import pytest
from standardwebhooks.webhooks import Webhook

from cli.merchants import check_webhook_secret
from contracts.api_keys import new_webhook_secret
from contracts.webhook_signing import signing_key, webhook_headers


def whsec(length: int, *, padded: bool = True) -> str:
    encoded = base64.b64encode(bytes(range(length))).decode()
    return "whsec_" + (encoded if padded else encoded.rstrip("="))


def test_generated_secrets_are_in_the_specs_range() -> None:
    for _ in range(20):
        secret = new_webhook_secret()
        check_webhook_secret(secret)
        assert 24 <= len(signing_key(secret)) <= 64


@pytest.mark.parametrize("length", [24, 32, 64])
def test_a_secret_of_192_to_512_bits_is_taken(length: int) -> None:
    check_webhook_secret(whsec(length))


@pytest.mark.parametrize("length", [23, 65, 69])
def test_a_secret_outside_192_to_512_bits_is_refused(length: int) -> None:
    with pytest.raises(ValueError, match="24 to 64 bytes"):
        check_webhook_secret(whsec(length))


def test_an_unpadded_secret_the_signer_and_the_reference_library_read_is_taken() -> None:
    secret = whsec(32, padded=False)
    body = b'{"id":"evt_1"}'
    headers = webhook_headers(
        event_id="evt_1",
        legacy_event="PAYOUT_CREATED",
        timestamp=int(time.time()),
        body=body,
        secrets=[secret],
    )
    Webhook(secret).verify(body, headers)

    check_webhook_secret(secret)
