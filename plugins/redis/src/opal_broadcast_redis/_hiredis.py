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

from ._resp import LONG, ErrorReply, Parser, ProtocolError, Reply

__all__ = ["HiredisParser", "new_parser", "parser_name"]

logger = logging.getLogger("opal_broadcast.redis")

#: The hiredis module, None when it is not installed, False until first looked for.
_hiredis: Any = False


class HiredisParser:
    """:class:`~._resp.Parser`'s interface on hiredis's ``Reader``.

    Memory: the reader copies every read into its own buffer, which grows to the size of the
    longest reply and is released only at a later read, and then copies each bulk string out of
    it. So after a reply of :data:`~._resp.LONG` bytes or more that took several reads, the
    reader is replaced before the reply is delivered (what followed the reply in the last read
    is fed to the new one): a 100 MiB message costs about twice its size for the moment of that
    copy, instead of its copy plus the buffer for as long as the message is being handled.
    """

    __slots__ = ("_hiredis", "_reader", "_stalled")

    def __init__(self, hiredis: Any) -> None:
        self._hiredis = hiredis
        self._reader = self._new_reader()
        #: Bytes fed since the last read that completed a reply.
        self._stalled = 0

    def feed(self, data: bytes) -> list[Reply]:
        """Add ``data``; return every reply it completes (possibly none)."""
        reader = self._reader
        reader.feed(data)
        reply = reader.gets()
        if reply is False:
            self._stalled += len(data)
            return []
        if self._stalled >= LONG:
            reader = self._renew(data)
        self._stalled = 0
        replies: list[Reply] = [reply]
        reply = reader.gets()
        while reply is not False:
            replies.append(reply)
            reply = reader.gets()
        return replies

    def _new_reader(self) -> Any:
        return self._hiredis.Reader(protocolError=ProtocolError, replyError=ErrorReply)

    def _renew(self, data: bytes) -> Any:
        """A new reader fed what ``data`` holds after the long reply just taken from the old one.

        The reply was completed by ``data`` and is more than 1 KiB, so hiredis has dropped the
        bytes it consumed (it does once 1 KiB is consumed) and ``len()`` counts exactly the
        bytes after the reply, all of them at the end of ``data``.
        """
        left = self._reader.len()
        if left > len(data):  # not how hiredis keeps its buffer: keep the reader, never guess
            return self._reader
        reader = self._reader = self._new_reader()
        if left:
            reader.feed(data, len(data) - left)
        return reader


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
