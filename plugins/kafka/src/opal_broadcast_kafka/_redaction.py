"""Keep passwords out of aiokafka's log records.

At DEBUG level aiokafka logs every request it sends, SASL/PLAIN's authentication bytes included
(``SaslAuthenticateRequest_v1(sasl_auth_bytes=b'user\\x00user\\x00password')``). A filter on its
loggers replaces the secrets of every connection opened here with ``***``. It costs nothing when
those loggers are not enabled: filters only see records that will be emitted.
"""

from __future__ import annotations

import logging

__all__ = ["protect"]


class _SecretFilter(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record is not ours to fix
            return True
        clean = text
        for secret in self.secrets:
            clean = clean.replace(secret, "***")
        if clean != text:
            record.msg, record.args = clean, None
        return True


_filter = _SecretFilter()


def protect(secrets: tuple[str, ...]) -> None:
    """Redact ``secrets`` (as text and as they show inside a ``bytes`` repr) from aiokafka's logs."""
    for secret in secrets:
        _filter.secrets.add(secret)
        _filter.secrets.add(repr(secret.encode())[2:-1])
    # Filters do not apply to records propagated from child loggers: attach to each of them
    # (aiokafka's modules are imported by now, so their loggers exist).
    names = [name for name in logging.root.manager.loggerDict if name.split(".")[0] == "aiokafka"]
    for name in ["aiokafka", *names]:
        logger = logging.getLogger(name)
        if _filter not in logger.filters:
            logger.addFilter(_filter)
