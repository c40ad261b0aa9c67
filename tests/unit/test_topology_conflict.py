"""What the start says when RabbitMQ refuses this version's topology (PRECONDITION_FAILED), by
the broker's reply: RabbitMQ 3.10 here, a newer one's text taken from its source."""

import pytest
from aiormq.exceptions import ChannelPreconditionFailed

from contracts.topology import TopologyConflict


def _refused(reply: str) -> ChannelPreconditionFailed:
    return ChannelPreconditionFailed(406, f"PRECONDITION_FAILED - {reply}")


@pytest.mark.parametrize(
    ("reply", "advice"),
    [
        (
            "cannot declare queue 'webhooks.parking-lot': queue limit in vhost 'payouts' (1) is "
            "reached",
            "clear_vhost_limits",
        ),
        (  # RabbitMQ 3.13 and later: it was said to be an older version's queue, to delete
            "cannot declare queue 'webhooks.parking-lot': queue limit in cluster (100) is reached",
            "cluster_queue_limit",
        ),
        (
            "inequivalent arg 'x-delivery-limit' for queue 'processor.payout-commands' in vhost "
            "'payouts': received '10' but current is '20'",
            "older version",
        ),
    ],
    ids=["vhost queue limit", "cluster queue limit", "an older version's queue"],
)
def test_the_advice_follows_the_brokers_reply(reply: str, advice: str) -> None:
    said = str(TopologyConflict.of(_refused(reply)))

    assert reply in said and advice in said, said
    assert said.endswith("then start again."), said
