"""`payouts seed` (compose runs it on every `up`): runs in turn with another seed started
meanwhile, refuses an API key that is another merchant's in one line, and never reuses a
deactivated demo merchant."""

import asyncio
import json

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cli.supervisor import payouts_command
from contracts.api_keys import new_api_key
from contracts.db.database_locks import database_lock
from contracts.db.engine import SessionFactory, transaction
from contracts.db.models import Merchant
from tests.conftest import MerchantFactory
from tests.support.api_helpers import API
from tests.support.polling import eventually
from tests.support.statements import statement_running


async def _seed(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *payouts_command("seed", *args),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_a_seed_waits_for_the_seed_that_runs(
    service_env: dict[str, str], engine: AsyncEngine, sessions: SessionFactory
) -> None:
    """Two at once each found no demo merchant and each made one, with its own key and opening
    balance. Here the test holds the seeds' turn, as a running seed would."""
    async with engine.connect() as holder, database_lock(holder, "payouts seed", wait_seconds=5):
        seed = await _seed(service_env)

        async def waiting() -> bool:
            return await statement_running(sessions, "SELECT GET_LOCK(") and (
                seed.returncode is None
            )

        await eventually(waiting, what="the seed waiting for its turn")
    _, err = await asyncio.wait_for(seed.communicate(), timeout=60)
    assert seed.returncode == 0, err.decode()[-600:]


async def test_a_seed_whose_turn_does_not_come_says_so_within_the_commands_timeout(
    service_env: dict[str, str], engine: AsyncEngine
) -> None:
    """The wait for the lock is one answer of the database: as long as the command's timeout
    (both 120 s), the seed said "MySQL does not answer" for a lock held (found by the diff
    review). It waits less than that timeout, then names the lock."""
    quick = {**service_env, "PAYOUTS_COMMAND_DATABASE_TIMEOUT_SECONDS": "3"}
    async with engine.connect() as holder, database_lock(holder, "payouts seed", wait_seconds=5):
        seed = await _seed(quick)
        _, err = await asyncio.wait_for(seed.communicate(), timeout=60)

    said = err.decode()
    assert seed.returncode == 1, said[-600:]
    assert "another process held the lock" in said, said[-600:]


async def test_an_api_key_of_another_merchant_is_refused_in_one_line(
    service_env: dict[str, str], make_merchant: MerchantFactory
) -> None:
    """The key column is unique: the seed died on an IntegrityError traceback printing the SQL."""
    other = await make_merchant()

    wide = {**service_env, "COLUMNS": "400"}  # the refusal's box on one line
    seed = await _seed(wide, "--api-key", other.api_key)
    _, err = await asyncio.wait_for(seed.communicate(), timeout=60)

    said = err.decode()
    assert seed.returncode == 2, said[-600:]
    assert "Traceback" not in said
    assert "'--api-key'" in said and f"merchant {other.merchant_id}'s" in said


async def _seeded(env: dict[str, str], *args: str) -> dict[str, str | bool | None]:
    seed = await _seed(env, *args)
    out, err = await asyncio.wait_for(seed.communicate(), timeout=60)
    assert seed.returncode == 0, err.decode()[-600:]
    seeded: dict[str, str | bool | None] = json.loads(out.decode().strip().splitlines()[-1])
    return seeded


async def _deactivate_every_demo_merchant(sessions: SessionFactory) -> None:
    async with transaction(sessions) as session:
        await session.execute(
            update(Merchant).where(Merchant.name == "Demo Merchant").values(is_active=False)
        )


async def _is_active(sessions: SessionFactory, merchant_id: object) -> bool | None:
    async with sessions() as session:
        return await session.scalar(select(Merchant.is_active).where(Merchant.id == merchant_id))


async def test_a_deactivated_demo_merchant_is_not_given_the_deployments_key(
    service_env: dict[str, str], sessions: SessionFactory, api_client: httpx.AsyncClient
) -> None:
    """Reused, the deactivated demo merchant got the key compose gives on every `up`, and every
    route refused that key with 401 (seed review)."""
    await _seeded(service_env)
    await _deactivate_every_demo_merchant(sessions)
    key = new_api_key()

    seeded = await _seeded(service_env, "--api-key", key)

    assert seeded["created"] is True
    assert await _is_active(sessions, seeded["merchantId"])
    balance = await api_client.get(f"{API}/balance", headers={"X-API-KEY": key})
    assert balance.status_code == 200, balance.text


async def test_a_deactivated_demo_merchant_is_not_reported_as_keeping_its_key(
    service_env: dict[str, str], sessions: SessionFactory
) -> None:
    """Without --api-key the seed said the deactivated demo merchant 'keeps its API key', a key
    every route refused: a new demo merchant is made, and its key printed once."""
    await _seeded(service_env)
    await _deactivate_every_demo_merchant(sessions)

    seeded = await _seeded(service_env)

    assert seeded["created"] is True and seeded["apiKey"]
    assert await _is_active(sessions, seeded["merchantId"])


async def test_the_deployments_key_of_a_deactivated_demo_merchant_is_refused_saying_so(
    service_env: dict[str, str], sessions: SessionFactory
) -> None:
    """Compose gives the same key on every `up`: after the demo merchant holding it was
    deactivated, the seed said the key was 'not the demo merchant's' (diff review). The key
    stays with the suspended merchant: it must not open a new one."""
    key = new_api_key()
    first = await _seeded(service_env, "--api-key", key)
    await _deactivate_every_demo_merchant(sessions)

    seed = await _seed({**service_env, "COLUMNS": "400"}, "--api-key", key)
    _, err = await asyncio.wait_for(seed.communicate(), timeout=60)

    said = err.decode()
    assert seed.returncode == 2, said[-600:]
    assert f"merchant {first['merchantId']}'s, which is deactivated" in said, said[-600:]
    assert f"payouts merchant activate {first['merchantId']}" in said, said[-600:]
