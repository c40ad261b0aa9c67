"""Apply Alembic revisions programmatically (`payouts migrate`, tests), and tell whether a
database lacks one this code needs."""

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

_HERE = Path(__file__).parent


def alembic_config(database_url: str) -> Config:
    config = Config(str(_HERE / "alembic.ini"))
    config.set_main_option("script_location", str(_HERE))
    # Alembic's Config is a ConfigParser, where `%` starts an interpolation: a URL-encoded
    # password (p%40ss) failed migrate with a traceback that printed it.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_to_head(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")


@functools.cache
def _revisions() -> tuple[str | None, frozenset[str]]:
    """This code's head revision, and every revision it knows."""
    scripts = ScriptDirectory.from_config(alembic_config("mysql+asyncmy://unused/unused"))
    return scripts.get_current_head(), frozenset(s.revision for s in scripts.walk_revisions())


def is_a_newer_codes(version: str | None) -> bool:
    """Whether `version` is a revision this code does not know: a newer code's (a newer
    version's `payouts migrate` ran while this one was still up; docs/operations.md, Upgrading,
    says to stop it first)."""
    return version is not None and version not in _revisions()[1]


def lacks_migrations(version: str | None) -> bool:
    """Whether a database at `version` (None: never migrated) lacks a revision this code needs.
    A newer code's revision is not lacking."""
    return version is None or (version != _revisions()[0] and not is_a_newer_codes(version))


class NewerThanThisCode(Exception):
    """`payouts migrate` found the database at a newer code's revision: nothing to do (the
    services run on it, as lacks_migrations says)."""

    def __init__(self, revision: str) -> None:
        super().__init__(revision)
        self.revision = revision
