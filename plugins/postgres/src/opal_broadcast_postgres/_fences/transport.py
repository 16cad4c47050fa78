"""asyncpg's private ``Connection._transport``: the only way to the socket, for keepalives.

libpq's ``keepalives*`` and ``tcp_user_timeout`` set TCP options on the client's socket, so the
client notices a server or a network that went away without a word. asyncpg takes no such option
(MagicStack/asyncpg#606) and shows its socket nowhere public: ``connect()`` opens it itself, with
no socket factory. The nearest public means, ``server_settings`` with the server's
``tcp_keepalives_*``, set keepalive on the server's end only: measured with both
(bench/bench_postgres_internals.py, asyncpg 0.32), the client's socket had ``SO_KEEPALIVE=0``
there, ``1`` with the idle time asked for here; a connect took as long either way (about 7 ms,
within 0.3 ms). It would also add startup parameters PgBouncer refuses unless told to ignore.

:func:`client_socket` checks the attribute each time a connection opens. Where asyncpg no longer
has it, the socket is left as asyncpg made it, after one warning: a dead server is then noticed
by the core's liveness probe, and the server's end can still be given keepalives through the
``server_settings`` option.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from . import fall_back

__all__ = ["client_socket"]


def client_socket(connection: Any) -> socket.socket | None:
    """The socket under ``connection`` (None: not there, or asyncpg lacks ``_transport``)."""
    transport = getattr(connection, "_transport", None)
    if not isinstance(transport, asyncio.BaseTransport):
        fall_back(
            "Connection._transport (an asyncio transport)",
            "TCP keepalive is not set on the client's socket (libpq's keepalives* and "
            "tcp_user_timeout options have no effect); the liveness probe still notices a "
            "dead server",
        )
        return None
    sock: socket.socket | None = transport.get_extra_info("socket")
    return sock
