"""Apply Alembic revisions programmatically (`payouts migrate`, tests)."""

from pathlib import Path

from alembic import command
from alembic.config import Config

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
