"""The RESP parser: hiredis's C ``Reader`` when hiredis is installed, else the pure-Python one.

hiredis is what redis-py itself uses when it is there (``pip install opal-broadcast-redis[hiredis]``
installs it). Both parsers give the same replies (bytes, int, ``ErrorReply``, lists, None) and
raise :class:`~._resp.ProtocolError` for bytes that are not RESP, so the wire does not care which
it has. hiredis is imported on the first connection, not when the plugin is discovered; a hiredis
that fails to import leaves the pure-Python parser in use, with one warning.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from ._resp import ErrorReply, Parser, ProtocolError, Reply

__all__ = ["HiredisParser", "new_parser", "parser_name"]

logger = logging.getLogger("opal_broadcast.redis")

#: The hiredis module, None when it is not installed, False until first looked for.
_hiredis: Any = False


class HiredisParser:
    """:class:`~._resp.Parser`'s interface on hiredis's ``Reader``."""

    __slots__ = ("_reader",)

    def __init__(self, hiredis: Any) -> None:
        self._reader = hiredis.Reader(protocolError=ProtocolError, replyError=ErrorReply)

    def feed(self, data: bytes) -> list[Reply]:
        """Add ``data``; return every reply it completes (possibly none)."""
        reader = self._reader
        reader.feed(data)
        replies: list[Reply] = []
        reply = reader.gets()
        while reply is not False:
            replies.append(reply)
            reply = reader.gets()
        return replies


def _find_hiredis() -> Any:
    global _hiredis
    if _hiredis is False:
        try:
            _hiredis = importlib.import_module("hiredis")
        except ImportError as exc:
            _hiredis = None
            if exc.name != "hiredis":  # installed, but broken
                logger.warning("hiredis failed to import (%s): parsing RESP in Python", exc)
    return _hiredis


def new_parser() -> HiredisParser | Parser:
    """A parser for one connection: hiredis's when it is installed."""
    hiredis = _find_hiredis()
    return HiredisParser(hiredis) if hiredis is not None else Parser()


def parser_name() -> str:
    """``hiredis x.y.z`` or ``python``: what ``opal-broadcast check`` and the bench report."""
    hiredis = _find_hiredis()
    return f"hiredis {hiredis.__version__}" if hiredis is not None else "python"
