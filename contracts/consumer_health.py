"""Whether a consumer (the processor, the webhook service) works, as its heartbeat
(contracts/heartbeat.py) asks every few seconds: every subscriber consuming, its broker connection
up, and its database answering with this code's migrations, as the API's readiness asks. Without
the database, the processor and the webhook service beat on through an outage that turned the
API's /ready and the relay's heartbeat unhealthy (diff review)."""

from faststream.rabbit import RabbitBroker

from contracts.db.engine import SessionFactory
from migrations.state import MigrationState, migration_state

# A broker or a database that does not answer within this counts as down for this beat.
CHECK_SECONDS = 2.0


async def consumer_works(broker: RabbitBroker, sessions: SessionFactory) -> bool:
    if not all(subscriber.running for subscriber in broker.subscribers):
        return False
    if not await broker.ping(timeout=CHECK_SECONDS):  # a robust connection that is reconnecting
        return False
    return await migration_state(sessions, CHECK_SECONDS) is MigrationState.OK
