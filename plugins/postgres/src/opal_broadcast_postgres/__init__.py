"""PostgreSQL LISTEN/NOTIFY backbone for opal-broadcast: ``postgres://`` and ``postgresql://``.

Installed, it is found through the ``opal_broadcast`` entry point; nothing needs importing::

    async with Broadcast("postgres://user:password@db.example.com/opal") as broadcast:
        ...

This package exports the limits and defaults users may want to check against; see the README
for the options, the payload cap and the wire format.
"""

from ._codec import MAX_CHANNEL_BYTES, MAX_PAYLOAD_BYTES
from ._options import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_POOL_SIZE,
    OPTIONS,
    POOL_SIZE_ENV,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_POOL_SIZE",
    "MAX_CHANNEL_BYTES",
    "MAX_PAYLOAD_BYTES",
    "OPTIONS",
    "POOL_SIZE_ENV",
]
