"""Webhook secrets sealed at rest: what a stored value reveals, and which keys open it."""

import base64
import secrets
from collections.abc import Callable

import pytest

from contracts.secrets_at_rest import (
    DEVELOPMENT_SECRETS_KEY,
    SEALED_PREFIX,
    SecretsKeyError,
    SecretsKeyring,
    key_id,
)

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()


def a_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def test_a_sealed_secret_shows_neither_the_secret_nor_the_same_text_twice() -> None:
    keyring = SecretsKeyring.from_setting(a_key())
    first, second = keyring.seal(SECRET), keyring.seal(SECRET)

    assert SECRET not in first and SECRET.removeprefix("whsec_") not in first
    assert first != second  # a nonce of its own: equal secrets are not seen to be equal
    assert first.startswith(f"{SEALED_PREFIX}:{keyring.sealing_key_id}:")
    assert keyring.open(first) == keyring.open(second) == SECRET
    assert len(first) <= 255  # the column (migration 0036)


def test_the_first_key_seals_and_every_key_opens_what_it_sealed() -> None:
    old, new = a_key(), a_key()
    sealed_before = SecretsKeyring.from_setting(old).seal(SECRET)
    keyring = SecretsKeyring.from_setting(f"{new}, {old}")

    assert keyring.sealing_key_id == key_id(base64.b64decode(new))
    assert keyring.open(sealed_before) == SECRET
    assert keyring.sealed_by(sealed_before) == key_id(base64.b64decode(old))
    assert keyring.sealed_by(keyring.seal(SECRET)) == keyring.sealing_key_id


def test_a_secret_sealed_with_a_key_no_longer_held_names_that_key() -> None:
    old = SecretsKeyring.from_setting(a_key())
    sealed = old.seal(SECRET)

    with pytest.raises(SecretsKeyError, match=f"sealed with key {old.sealing_key_id}, which"):
        SecretsKeyring.from_setting(a_key()).open(sealed)


def _flipped(body: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(body))
    raw[-1] ^= 1
    return base64.urlsafe_b64encode(bytes(raw)).decode()


@pytest.mark.parametrize(
    "alter",
    [_flipped, lambda body: body[:8], lambda body: "!" + body[1:], lambda body: ""],
    ids=["a bit changed", "cut short", "not base64", "no body"],
)
def test_an_altered_sealed_secret_does_not_open(alter: Callable[[str], str]) -> None:
    keyring = SecretsKeyring.from_setting(a_key())
    prefix, sealed_by, body = keyring.seal(SECRET).split(":")

    with pytest.raises(SecretsKeyError, match="does not open: altered"):
        keyring.open(f"{prefix}:{sealed_by}:{alter(body)}")
    with pytest.raises(SecretsKeyError, match="does not open: altered"):
        keyring.open(f"{prefix}:{sealed_by}")


def test_a_secret_stored_before_sealing_reads_as_itself() -> None:
    """Stored before migration 0036, or by an older API during a rolling upgrade."""
    keyring = SecretsKeyring.from_setting(DEVELOPMENT_SECRETS_KEY)
    assert keyring.open(SECRET) == SECRET
    assert keyring.sealed_by(SECRET) is None


@pytest.mark.parametrize(
    ("setting", "problem"),
    [
        ("", "at least one key"),
        (" , ", "at least one key"),
        ("not base64!", "must be base64"),
        (base64.b64encode(b"k" * 16).decode(), "must be 32 bytes, base64: got 16"),
        (f"{DEVELOPMENT_SECRETS_KEY},short", "must be base64"),
    ],
)
def test_a_key_setting_that_cannot_work_says_why(setting: str, problem: str) -> None:
    with pytest.raises(SecretsKeyError, match=problem):
        SecretsKeyring.from_setting(setting)


def test_two_keys_with_one_id_are_refused_and_one_key_twice_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stored value names its key by the first 8 hex digits of its SHA-256: of two keys with
    the same id, the second took the first's place, and what the first sealed no longer opened
    (secrets review)."""
    first, second = a_key(), a_key()
    assert SecretsKeyring.from_setting(f"{first},{first}").keys.keys() == {
        key_id(base64.b64decode(first))
    }
    monkeypatch.setattr("contracts.secrets_at_rest.key_id", lambda key: "00000000")
    with pytest.raises(SecretsKeyError, match="two different keys share an id"):
        SecretsKeyring.from_setting(f"{first},{second}")
