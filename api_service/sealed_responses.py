"""Stored responses that carry a secret (a new webhook signing secret), sealed so that only the
caller can read them back.

The idempotency table keeps a response for 24 hours so a retry can replay it byte for byte. For
a rotate-secret response that would leave the plaintext secret where backups and operators read
it. Instead it is stored encrypted (AES-256-GCM) under a key derived from the caller's API key,
which the database never holds (only its SHA-256 digest): a replay by the same caller decrypts
it, anyone reading the table sees ciphertext.
"""

import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from api_service.errors import IdempotencyKeyReused

SEALED_PREFIX = b"sealed:v1:"
_NONCE_BYTES = 12


@dataclass(frozen=True)
class ResponseSeal:
    key: bytes

    @classmethod
    def for_api_key(cls, api_key: str) -> "ResponseSeal":
        # Not the digest stored in merchants.api_key_hash: a different, keyed derivation.
        return cls(
            hmac.new(api_key.encode(), b"payouts/idempotent-response", hashlib.sha256).digest()
        )

    def seal(self, body: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return SEALED_PREFIX + nonce + AESGCM(self.key).encrypt(nonce, body, SEALED_PREFIX)

    def unseal(self, stored: bytes) -> bytes:
        """The response as first sent; stored responses that were never sealed pass as they are."""
        if not stored.startswith(SEALED_PREFIX):
            return stored
        sealed = stored.removeprefix(SEALED_PREFIX)
        nonce, ciphertext = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
        try:
            return AESGCM(self.key).decrypt(nonce, ciphertext, SEALED_PREFIX)
        except InvalidTag as exc:  # sealed under another API key
            raise IdempotencyKeyReused from exc
