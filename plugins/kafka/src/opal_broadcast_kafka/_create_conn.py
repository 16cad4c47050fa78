"""The fence around ``aiokafka.conn.create_conn``, a private internal of aiokafka.

It opens one connection to one broker and raises why it could not (SASL refused, mechanism not
offered) where the public clients say only "Unable to bootstrap" and log the rest: ``_connect``
uses it to explain a failed connect, and nothing else does. Any aiokafka release may change or
drop it, so :func:`check` runs when a connection opens: if it is gone, or no longer takes the
arguments given here, one warning is logged (once per process) and ``_connect`` takes the public
path instead, a plain TCP connection to each server, which tells a refused server from one that
accepted but did not answer, though not why.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import ssl
from collections.abc import Callable
from typing import Any

from ._options import KafkaConfig

__all__ = ["check", "connect"]

logger = logging.getLogger("opal_broadcast.kafka")

#: The arguments :func:`connect` passes (``host`` and ``port`` positionally).
_KEYWORDS = {
    "client_id",
    "request_timeout_ms",
    "ssl_context",
    "security_protocol",
    "sasl_mechanism",
    "sasl_plain_username",
    "sasl_plain_password",
}


def check() -> bool:
    """Whether ``create_conn`` is there as expected (warns once per process when it is not)."""
    return _create_conn() is not None


async def connect(host: str, port: int, config: KafkaConfig, tls: ssl.SSLContext | None) -> Any:
    """A connection to one broker (close it with ``.close()``); only when :func:`check` holds."""
    create_conn = _create_conn()
    if create_conn is None:
        raise RuntimeError("aiokafka.conn.create_conn is not available (see check())")
    return await create_conn(
        host,
        port,
        client_id=config.client_id,
        request_timeout_ms=config.request_timeout_ms,
        ssl_context=tls,
        security_protocol=config.security_protocol,
        sasl_mechanism=config.sasl_mechanism,
        sasl_plain_username=config.username,
        sasl_plain_password=config.password,
    )


@functools.cache
def _create_conn() -> Callable[..., Any] | None:
    try:
        create_conn = importlib.import_module("aiokafka.conn").create_conn
        parameters = list(inspect.signature(create_conn).parameters)
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        problem = f"it is gone ({exc!r})"
    else:
        missing = sorted(_KEYWORDS - set(parameters))
        if parameters[:2] == ["host", "port"] and not missing:
            return create_conn  # type: ignore[no-any-return]
        problem = f"its arguments changed (host, port, {', '.join(missing) or '...'})"
    logger.warning(
        "aiokafka.conn.create_conn, a private part of aiokafka used only to explain failed "
        "connects, %s: a failed connect now names each server's TCP outcome, not the SASL or "
        "protocol problem behind it. Connecting is not affected.",
        problem,
    )
    return None
