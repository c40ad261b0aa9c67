"""API keys: `mpk_test_<43 url-safe chars>`; only the SHA-256 hex digest is stored."""

import base64
import hashlib
import secrets

API_KEY_PREFIX = "mpk_test_"


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
