"""A database connection whose peer goes silent is dropped within seconds, not when its read
times out.

A network that drops packets (a partition, a failover that moves the address, a firewall that
forgets the connection) sends no RST and no FIN: the connection looks open, and a worker waiting
for an answer on it waited for its whole read timeout (120 s, past the server's lock wait), its
work stalled that long after the network came back (half-open connections review). The kernel
tells such a peer by TCP keepalive probes it no longer acknowledges (while the connection waits
for an answer) and by data it sent that stays unacknowledged (TCP_USER_TIMEOUT). A live server,
however long its statement runs, acknowledges both.
"""

import socket
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

# How long a silent peer keeps a connection: past any pause of a loaded server's kernel.
DEAD_PEER_SECONDS = 20
_PROBES = 3


def drop_silent_peers(engine: AsyncEngine, seconds: int = DEAD_PEER_SECONDS) -> None:
    """Each new TCP connection of `engine` is dropped (error 2013, an outage) once its peer has
    been silent for about `seconds`; a connection over a Unix socket is left as it is."""

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # asyncmy's transport, which it sets SO_KEEPALIVE on, with the system's 2-hour idle.
        transport = dbapi_connection.driver_connection._transport
        sock = transport.get_extra_info("socket")
        if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        probe_every = max(1, seconds // (_PROBES + 1))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, probe_every)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, probe_every)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, _PROBES)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, seconds * 1000)

    event.listen(engine.sync_engine, "connect", on_connect)
