"""Keep passwords out of aiokafka's log records.

At DEBUG level aiokafka logs every request it sends, SASL/PLAIN's authentication bytes included
(``SaslAuthenticateRequest_v1(sasl_auth_bytes=b'user\\x00user\\x00password')``). A filter on its
loggers replaces the secrets of every connection opened here with ``***``. It costs nothing when
those loggers are not enabled: filters only see records that will be emitted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from opal_broadcast.plugin import BackboneURL, Redactor

__all__ = ["protect"]

#: The secrets of every connection opened in this process (a URL without any of its own).
_redact = Redactor(BackboneURL.parse("kafka://"))


def _mask(record: logging.LogRecord) -> bool:
    try:
        text = record.getMessage()
    except Exception:  # a malformed record is not ours to fix
        return True
    clean = _redact(text)
    if clean != text:
        record.msg, record.args = clean, None
    return True


def protect(secrets: Iterable[str]) -> None:
    """Redact ``secrets`` (as text and as they show inside a ``bytes`` repr) from aiokafka's logs."""
    for secret in secrets:
        _redact.keep_secret(secret)
        _redact.keep_secret(repr(secret.encode())[2:-1])
    # Filters do not apply to records propagated from child loggers: attach to each of them
    # (aiokafka's modules are imported by now, so their loggers exist).
    names = [name for name in logging.root.manager.loggerDict if name.split(".")[0] == "aiokafka"]
    for name in ["aiokafka", *names]:
        logger = logging.getLogger(name)
        if _mask not in logger.filters:
            logger.addFilter(_mask)
