"""The embedded ``memory://`` backbone: one in-process bus per URL, for tests and single processes.

Every connection to ``memory://name`` in the process joins the same bus, so two ``Broadcast``
instances on one URL see each other (encode/broadcaster's per-instance memory backend cannot serve
fastapi_websocket_pubsub). Use one event loop per bus. :mod:`opal_broadcast.testing` can take a
bus down, bring it back and freeze it, to exercise the core's recovery without servers.
"""

from __future__ import annotations

from typing import Any

import anyio

from ._errors import BackboneUnavailable
from ._hookspecs import BackboneInfo, BackboneLink, hookimpl
from ._url import BackboneURL, take_options


class _Bus:
    def __init__(self) -> None:
        self.connections: set[_Connection] = set()
        self.down = False
        self.frozen = False


class _Connection:
    def __init__(self, bus: _Bus, link: BackboneLink, name: str) -> None:
        self.bus = bus
        self.link = link
        self.name = name
        self.channels: set[str] = set()


_buses: dict[str, _Bus] = {}


def bus_name(url: BackboneURL) -> str:
    """The bus a URL joins: its host and path (``memory://`` and ``memory:///`` differ)."""
    return url.hostlist + url.path


def _bus(name: str) -> _Bus:
    return _buses.setdefault(name, _Bus())


@hookimpl
def opal_broadcast_backbone() -> BackboneInfo:
    return BackboneInfo(schemes=("memory",), summary="in-process bus (embedded, for one process)")


@hookimpl
async def opal_broadcast_connect(
    url: BackboneURL, options: dict[str, Any], link: BackboneLink
) -> _Connection:
    take_options(url, (), options)
    name = bus_name(url)
    bus = _bus(name)
    if bus.down:
        raise BackboneUnavailable(f"{url} is down (simulated outage).")
    connection = _Connection(bus, link, name)
    bus.connections.add(connection)
    return connection


@hookimpl
async def opal_broadcast_disconnect(connection: _Connection) -> None:
    connection.bus.connections.discard(connection)


@hookimpl
async def opal_broadcast_publish(
    connection: _Connection, channel: str, message: str | bytes
) -> None:
    bus = connection.bus
    if bus.down or connection not in bus.connections:
        raise BackboneUnavailable(f"memory://{connection.name} is down (simulated outage).")
    if bus.frozen:
        await anyio.sleep_forever()
    for peer in list(bus.connections):
        if channel in peer.channels:
            peer.link.deliver(channel, message)


@hookimpl
async def opal_broadcast_subscribe(connection: _Connection, channel: str) -> None:
    bus = connection.bus
    if bus.down or connection not in bus.connections:
        raise BackboneUnavailable(f"memory://{connection.name} is down (simulated outage).")
    connection.channels.add(channel)


@hookimpl
async def opal_broadcast_unsubscribe(connection: _Connection, channel: str) -> None:
    connection.channels.discard(channel)


@hookimpl
async def opal_broadcast_probe(connection: _Connection) -> None:
    if connection.bus.frozen:
        await anyio.sleep_forever()


def simulate_loss(url: str, *, stay_down: bool) -> None:
    """Drop every connection of the bus (each reports the loss); refuse new ones if ``stay_down``."""
    bus = _bus(bus_name(BackboneURL.parse(url)))
    bus.down = stay_down
    for connection in list(bus.connections):
        bus.connections.discard(connection)
        connection.link.lost("simulated loss of the memory backbone")


def restore(url: str) -> None:
    """Bring the bus back after :func:`simulate_loss` or :func:`freeze`."""
    bus = _bus(bus_name(BackboneURL.parse(url)))
    bus.down = bus.frozen = False


def freeze(url: str) -> None:
    """Keep connections open but carry nothing: publish and probes hang (a half-open link)."""
    _bus(bus_name(BackboneURL.parse(url))).frozen = True
