"""Merchants' webhook secrets are stored sealed (AES-256-GCM), not as the secret itself: a copy of
the database (a backup, a replica, a support dump) signs no webhook without the key. A webhook
secret cannot be hashed like an API key, the webhook service signs with it.

`PAYOUTS_SECRETS_KEYS`: comma-separated base64 keys of 32 bytes; the first seals, each one opens
what it sealed. A stored value names its key by the first 8 hex digits of the key's SHA-256:
`sealed1:<key id>:<base64url of nonce, ciphertext and tag>`. To change keys, put the new key
first, restart the services, run `payouts secrets reseal`, then drop the old key (operations
guide). The development key below is public: production refuses it (contracts.settings).
"""

import base64
import binascii
import hashlib
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SEALED_PREFIX = "sealed1"
KEY_BYTES = 32
NONCE_BYTES = 12
# Binds a sealed value to what it is: a sealed value of another kind does not open as a secret.
_PURPOSE = b"payouts:merchant-webhook-secret"


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


# Public: in this repository. Test mode runs with it; production refuses it.
_DEVELOPMENT_KEY = hashlib.sha256(b"payout sandbox development key: change_me").digest()
DEVELOPMENT_SECRETS_KEY = base64.b64encode(_DEVELOPMENT_KEY).decode()
DEVELOPMENT_KEY_ID = key_id(_DEVELOPMENT_KEY)


class SecretsKeyError(ValueError):
    """A key setting that cannot be read, or a sealed value no configured key opens."""


def _key(encoded: str) -> bytes:
    try:
        key = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        raise SecretsKeyError("each key must be base64") from None
    if len(key) != KEY_BYTES:
        raise SecretsKeyError(f"each key must be {KEY_BYTES} bytes, base64: got {len(key)}")
    return key


@dataclass(frozen=True)
class SecretsKeyring:
    sealing_key_id: str
    keys: dict[str, AESGCM]

    @classmethod
    def from_setting(cls, setting: str) -> "SecretsKeyring":
        """`setting`: PAYOUTS_SECRETS_KEYS (SecretsKeyError names what is wrong with it)."""
        keys = {_key(part): None for part in setting.split(",") if part.strip()}  # in order
        if not keys:
            raise SecretsKeyError("at least one key is needed")
        by_id = {key_id(key): key for key in keys}
        if len(by_id) < len(keys):
            # A stored value names its key by the id: one key's values went to the other.
            raise SecretsKeyError("two different keys share an id: replace one of them")
        return cls(key_id(next(iter(keys))), {kid: AESGCM(key) for kid, key in by_id.items()})

    def seal(self, secret: str) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self.keys[self.sealing_key_id].encrypt(nonce, secret.encode(), _PURPOSE)
        body = base64.urlsafe_b64encode(nonce + sealed).decode()
        return f"{SEALED_PREFIX}:{self.sealing_key_id}:{body}"

    def open(self, stored: str) -> str:
        """The secret `stored` holds. A value without the prefix was stored before migration
        0036 sealed the column, or by an older API during a rolling upgrade: it is the secret
        itself (`payouts secrets reseal` seals it)."""
        sealed_by = self.sealed_by(stored)
        if sealed_by is None:
            return stored
        key = self.keys.get(sealed_by)
        if key is None:
            raise SecretsKeyError(
                f"a webhook secret is sealed with key {sealed_by}, which PAYOUTS_SECRETS_KEYS "
                f"does not hold (it holds {', '.join(self.keys)})"
            )
        try:
            raw = base64.urlsafe_b64decode(stored.split(":", 2)[2])
            return key.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _PURPOSE).decode()
        except (IndexError, ValueError, InvalidTag):  # cut short, not base64, or changed
            raise SecretsKeyError(
                f"a webhook secret sealed with key {sealed_by} does not open: altered"
            ) from None

    def can_open(self, stored: str) -> bool:
        """Whether this keyring holds the key `stored` names (a value not sealed is itself)."""
        sealed_by = self.sealed_by(stored)
        return sealed_by is None or sealed_by in self.keys

    def sealed_by(self, stored: str) -> str | None:
        """The id of the key that sealed `stored`; None if it is not sealed."""
        if not stored.startswith(f"{SEALED_PREFIX}:"):
            return None
        return stored.split(":", 2)[1]
