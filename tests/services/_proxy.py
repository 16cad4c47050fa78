"""A TCP proxy on 127.0.0.1 whose behaviour a test switches at runtime, to fake network faults.

Modes: ``pass`` (forward), ``stall`` (keep every connection open but forward nothing either way:
a frozen middlebox / half-open link), ``delay`` (forward with added latency), and :meth:`cut`
(reset both ends of every connection with TCP RST; optionally close the listener, so new
connections are refused by the kernel, until :meth:`resume`).

asyncio only (it uses asyncio streams): use it from ``anyio`` tests on the asyncio backend::

    async with TcpProxy.for_url(redis_url) as proxy:
        client = redis.asyncio.from_url(proxy.url())
        proxy.stall()
        ...
        proxy.resume()
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

__all__ = ["TcpProxy"]

_DEFAULT_PORTS = {
    "postgres": 5432,
    "postgresql": 5432,
    "redis": 6379,
    "rediss": 6379,
    "kafka": 9092,
}
_CHUNK = 65536
_EOF = b""


@dataclass(eq=False)
class _Link:
    """One proxied connection: the client's side and the upstream side."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class TcpProxy:
    """Forward ``127.0.0.1:<ephemeral port>`` to ``target_host:target_port``; see the module doc."""

    def __init__(
        self, target_host: str, target_port: int, *, target_url: str | None = None
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = "127.0.0.1"
        self.port = 0
        self._target_url = target_url
        self._mode = "pass"
        self._delay = 0.0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: socket.socket | None = None
        self._links: set[_Link] = set()
        #: How many times every connection was reset: a connection being set up meanwhile is too.
        self._cuts = 0
        self._handlers: set[asyncio.Task[None]] = set()
        #: Every accepted socket until its handler is done with it (or aclose() closes it: a
        #: handler cancelled before it ever ran would otherwise leave it open).
        self._accepted: set[socket.socket] = set()
        self._closed = False

    @classmethod
    def for_url(cls, url: str) -> TcpProxy:
        """A proxy to the host and port of ``url``; :meth:`url` then gives the proxied URL."""
        parts = urlsplit(url)
        if not parts.hostname:
            raise ValueError(f"no host in {url!r}")
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
        if port is None:
            raise ValueError(f"no port in {url!r} and no default port for {parts.scheme!r}")
        return cls(parts.hostname, port, target_url=url)

    @property
    def mode(self) -> str:
        """``"pass"``, ``"stall"``, ``"delay"`` or ``"refuse"`` (after ``cut(refuse_new=True)``)."""
        return self._mode

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    @property
    def connections(self) -> int:
        """How many proxied connections are open."""
        return len(self._links)

    @property
    def address(self) -> str:
        """``host:port`` to connect to instead of the target."""
        return f"{self.host}:{self.port}"

    def url(self, url: str | None = None) -> str:
        """``url`` (default: the one given to :meth:`for_url`) with its host:port replaced."""
        url = url or self._target_url
        if url is None:
            raise ValueError("no URL given and the proxy was not made with for_url()")
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{self.address}" if userinfo else self.address
        return urlunsplit(parts._replace(netloc=netloc))

    async def __aenter__(self) -> TcpProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Listen on an ephemeral port of 127.0.0.1."""
        if self._loop is not None or self._closed:
            raise RuntimeError("a TcpProxy can be started only once")
        self._loop = asyncio.get_running_loop()
        self._listen()

    async def aclose(self) -> None:
        """Stop listening and close every connection."""
        self._closed = True
        self._stop_listening()
        self._reset_all(rst=False)
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        for sock in self._accepted:
            sock.close()
        self._accepted.clear()

    def stall(self) -> None:
        """Forward nothing either way; connections stay open (and new ones are accepted)."""
        self._reopen()
        self._mode = "stall"
        self._flowing.clear()

    def delay(self, seconds: float) -> None:
        """Forward every chunk read from now on ``seconds`` later, in order."""
        self._reopen()
        self._mode = "delay"
        self._delay = seconds
        self._flowing.set()

    def resume(self) -> None:
        """Back to ``pass``: forward at once (held data flows on) and accept connections again."""
        self._reopen()
        self._mode = "pass"
        self._delay = 0.0
        self._flowing.set()

    async def interrupt(self) -> None:
        """As a conformance ``outage``: reset every connection and refuse new ones."""
        self.cut(refuse_new=True)

    async def restore(self) -> None:
        """As a conformance ``outage``: forward and accept again."""
        self.resume()

    async def freeze(self) -> None:
        """As a conformance ``freeze``: :meth:`stall`."""
        self.stall()

    async def thaw(self) -> None:
        """As a conformance ``freeze``: :meth:`resume`."""
        self.resume()

    def cut(self, *, refuse_new: bool = False) -> int:
        """Reset (RST) both sides of every open connection; return how many were cut.

        With ``refuse_new`` the listening socket is closed too, so connection attempts are refused
        until :meth:`resume` (or :meth:`stall`/:meth:`delay`) listens again on the same port.
        """
        if refuse_new and self._listener is not None:
            self._stop_listening()
            self._mode = "refuse"
        return self._reset_all(rst=True)

    def _reopen(self) -> None:
        """Listen again on the same port after ``cut(refuse_new=True)``."""
        if self._listener is None and not self._closed:
            self._listen()

    def _listen(self) -> None:
        """Listen on ``self.port`` (0 at first: an ephemeral port) and accept from the loop.

        Not ``asyncio.start_server``: closing its server while an accept is in flight drops the
        accepted socket unclosed (Python 3.11's ``Server._attach`` asserts, and the error is
        swallowed), which a later test then meets as a ResourceWarning.
        """
        assert self._loop is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(100)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._loop.add_reader(sock.fileno(), self._accept, sock)
        self._listener = sock

    def _stop_listening(self) -> None:
        """Close the listening socket: the kernel refuses new connections from now on."""
        sock, self._listener = self._listener, None
        if sock is not None and self._loop is not None:
            self._loop.remove_reader(sock.fileno())
            sock.close()

    def _reset_all(self, *, rst: bool) -> int:
        self._cuts += 1
        links = list(self._links)
        for link in links:
            for writer in (link.client, link.upstream):
                _abort(writer, rst=rst)
            for task in link.tasks:
                task.cancel()
        self._links.clear()
        return len(links)

    def _accept(self, listener: socket.socket) -> None:
        """Accept every pending connection; each socket is tracked from accept() on."""
        assert self._loop is not None
        while True:
            try:
                sock, _ = listener.accept()
            except ConnectionAbortedError:
                continue
            except (BlockingIOError, InterruptedError):
                return
            self._accepted.add(sock)
            task = self._loop.create_task(self._handle(sock))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)

    async def _handle(self, sock: socket.socket) -> None:
        try:
            if self._mode == "refuse" or self._closed:  # accepted as the listener closed
                _reset(sock)
                return
            reader, writer = await asyncio.open_connection(sock=sock)  # the stream owns it now
            self._accepted.discard(sock)
            await self._serve(reader, writer)
        finally:
            if sock in self._accepted:
                self._accepted.discard(sock)
                sock.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cuts = self._cuts
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            _abort(writer, rst=True)  # the target is down: the client sees a reset
            return
        except asyncio.CancelledError:
            _abort(writer, rst=False)
            raise
        if self._cuts != cuts or self._closed:  # cut while connecting upstream: cut this one too
            _abort(writer, rst=True)
            _abort(up_writer, rst=True)
            return
        link = _Link(writer, up_writer)
        self._links.add(link)
        link.tasks = [
            asyncio.create_task(self._pipe(link, reader, up_writer)),
            asyncio.create_task(self._pipe(link, up_reader, writer)),
        ]
        try:
            # Both directions must end: one side's EOF is passed on and the other keeps flowing.
            await asyncio.wait(link.tasks)
        finally:
            # Close both sides before any await: a second cancellation (aclose) may interrupt
            # the waits below, and a stream dropped unclosed is a ResourceWarning later.
            for pipe in link.tasks:
                pipe.cancel()
            self._links.discard(link)
            for side in (writer, up_writer):
                side.close()
            await asyncio.gather(*link.tasks, return_exceptions=True)
            for side in (writer, up_writer):
                with contextlib.suppress(Exception):
                    await side.wait_closed()

    async def _pipe(
        self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Copy one direction, honouring stall and delay; a reset of one side resets the other.

        Reading and writing are separate tasks so ``delay`` adds latency without cutting
        throughput; in stall mode a chunk (or EOF, or reset) already read is held, not forwarded.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()

        async def read() -> None:
            while True:
                data: bytes | None
                try:
                    data = await reader.read(_CHUNK)
                except (ConnectionError, OSError):
                    data = None
                await self._flowing.wait()
                queue.put_nowait((loop.time() + self._delay, data))
                if not data:
                    return

        reader_task = asyncio.create_task(read())
        try:
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                await self._flowing.wait()
                if data is None:
                    raise ConnectionResetError("the peer reset the connection")
                if data == _EOF:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            for side in (link.client, link.upstream):
                _abort(side, rst=True)
        finally:
            reader_task.cancel()
            await asyncio.gather(reader_task, return_exceptions=True)


def _abort(writer: asyncio.StreamWriter, *, rst: bool) -> None:
    """Close a connection at once; with ``rst`` the peer gets a TCP reset, not an orderly FIN."""
    if rst:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            _linger_zero(sock)
    writer.transport.abort()


def _reset(sock: socket.socket) -> None:
    """Close a socket no stream owns yet with a TCP reset."""
    _linger_zero(sock)
    sock.close()


def _linger_zero(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
