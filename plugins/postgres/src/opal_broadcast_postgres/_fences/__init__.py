"""The asyncpg internals this plugin relies on: one module each, named for the internal.

Each is used only where asyncpg's public API was measured too slow or has no equivalent
(bench/bench_postgres_internals.py measures both paths in one sitting; each module's docstring
gives its figures). Each module checks its internal when a connection opens and, should the
installed asyncpg lack it or have changed its signature, takes the public path after one
warning naming the asyncpg version (:func:`fall_back`):

* :mod:`.process_notification`: ``Connection._process_notification``, overridden to deliver
  notifications as they are parsed and to LISTEN to many channels in one round trip; public
  path: ``add_listener``.
* :mod:`.transport`: ``Connection._transport``, the only way to the socket for libpq's
  keepalive options; public path: none (the socket is left as asyncpg made it).

Publishing used asyncpg's protocol ``bind_execute`` too, no longer: ``PreparedStatement.fetchval``
costs 4% more per publish (see ``_publisher``), within the 10% the public API is allowed.
"""

from __future__ import annotations

import importlib.metadata
import logging

__all__ = ["fall_back"]

logger = logging.getLogger("opal_broadcast.postgres")

#: The internals already warned about in this process.
_warned: set[str] = set()


def fall_back(internal: str, instead: str) -> None:
    """Log once per process that this asyncpg lacks ``internal`` and what is done ``instead``."""
    if internal in _warned:
        return
    _warned.add(internal)
    try:
        version = importlib.metadata.version("asyncpg")
    except importlib.metadata.PackageNotFoundError:
        version = "(version unknown)"
    logger.warning("asyncpg %s has no %s, or changed it: %s.", version, internal, instead)
