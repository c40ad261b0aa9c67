"""A column holding a secret sealed at rest (contracts.secrets_at_rest): written sealed with the
first of PAYOUTS_SECRETS_KEYS, read opened. Whoever reads the model reads the secret."""

from functools import lru_cache
from typing import Any

from sqlalchemy import String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from contracts.secrets_at_rest import SecretsKeyring
from contracts.settings import get_settings

# A secret of up to 100 ASCII characters sealed (migration 0036), and the longest secret taken:
# past 149 bytes a sealed secret does not fit (secrets review), and 0036's downgrade needs 100.
SEALED_SECRET_LENGTH = 255
MAX_SECRET_LENGTH = 100


@lru_cache
def keyring() -> SecretsKeyring:
    """This process's keys, from its settings."""
    return SecretsKeyring.from_setting(get_settings().secrets_keys)


class SealedSecret(TypeDecorator[str]):
    impl = String(SEALED_SECRET_LENGTH)
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else keyring().seal(value)

    def process_result_value(self, value: Any | None, dialect: Dialect) -> str | None:
        return None if value is None else keyring().open(str(value))
