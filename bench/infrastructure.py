"""The benchmark's own database and vhost (never `payouts` or a test's), recreated per run, and
its merchants."""

import os
from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import quote, urlsplit, urlunsplit

from sqlalchemy import text, update

from cli.merchants import NewMerchant, create_merchant
from contracts.db.engine import create_engine, create_session_factory, transaction
from contracts.db.models import Base, DirectoryInstitution, Merchant
from migrations.runner import upgrade_to_head

# The tests' helpers drop and create a database and a vhost the same way we need to.
from tests.support.infrastructure import management_url_for, recreate_database, recreate_vhost

DEFAULT_DATABASE_URL = "mysql+asyncmy://root@127.0.0.1:3306/payouts"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
# Enough for any run: a payout costs 100.00.
MERCHANT_BALANCE = Decimal("1000000000.00")


@dataclass(frozen=True)
class BenchInfrastructure:
    database_url: str
    amqp_url: str
    management_url: str  # http://user:pass@host:15672
    vhost: str

    @classmethod
    def from_environment(cls, database: str, vhost: str) -> "BenchInfrastructure":
        """The servers PAYOUTS_DATABASE_URL / PAYOUTS_AMQP_URL name, with our database and vhost."""
        database_url = urlsplit(os.environ.get("PAYOUTS_DATABASE_URL", DEFAULT_DATABASE_URL))
        amqp_url = urlsplit(os.environ.get("PAYOUTS_AMQP_URL", DEFAULT_AMQP_URL))
        return cls(
            database_url=urlunsplit(database_url._replace(path=f"/{database}")),
            amqp_url=urlunsplit(amqp_url._replace(path=f"/{quote(vhost, safe='')}")),
            management_url=management_url_for(urlunsplit(amqp_url)),
            vhost=vhost,
        )

    def recreate(self) -> None:
        recreate_database(self.database_url)
        recreate_vhost(self.management_url, self.vhost)
        upgrade_to_head(self.database_url)

    def service_environment(self) -> dict[str, str]:
        return {"PAYOUTS_DATABASE_URL": self.database_url, "PAYOUTS_AMQP_URL": self.amqp_url}


async def create_merchants(
    database_url: str, count: int, webhook_base_url: str | None
) -> list[NewMerchant]:
    """`count` funded merchants; each one's webhooks go to `<webhook_base_url>/<merchant id>`."""
    engine = create_engine(database_url, pool_size=1)
    try:
        async with transaction(create_session_factory(engine)) as session:
            merchants = []
            for number in range(count):
                merchant = await create_merchant(
                    session, name=f"Bench {number}", balance=MERCHANT_BALANCE, webhook_url=None
                )
                if webhook_base_url is not None:
                    await session.execute(
                        update(Merchant)
                        .where(Merchant.id == merchant.merchant_id)
                        .values(webhook_url=f"{webhook_base_url}/{merchant.merchant_id}")
                    )
                merchants.append(merchant)
            return merchants
    finally:
        await engine.dispose()


async def forget_all_data(database_url: str) -> None:
    """Empty every table but the directory: the floor's rows must not reach the system."""
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("SET FOREIGN_KEY_CHECKS = 0"))
            for table in Base.metadata.sorted_tables:
                if table.name != DirectoryInstitution.__tablename__:
                    await connection.execute(text(f"TRUNCATE TABLE `{table.name}`"))
            await connection.execute(text("SET FOREIGN_KEY_CHECKS = 1"))
    finally:
        await engine.dispose()
