"""Contract 0 plugins (the nine pluggy hooks) seen through the contract 1 :class:`Connection`.

Deprecated: such a plugin loads with one :class:`PluginContractWarning` pointing at the guide's
migration section, and works as before until the core drops contract 0 (see ``SUPPORTED_UNTIL``).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from ._contract import Connection, Link
from ._url import BackboneURL

__all__ = ["SUPPORTED_UNTIL", "hook_connection_class"]

#: The first core release that refuses contract 0 plugins.
SUPPORTED_UNTIL = "0.3.0"


async def _result(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def hook_connection_class(hooks: Any, name: str) -> type[Connection]:
    """A :class:`Connection` class whose methods call the plugin's hooks (``hooks``: its relay)."""
    probes = bool(hooks.opal_broadcast_probe.get_hookimpls())

    class HookConnection:
        __slots__ = ("handle",)

        def __init__(self, handle: Any) -> None:
            self.handle = handle

        @classmethod
        async def open(
            cls, url: BackboneURL, options: Mapping[str, Any], link: Link
        ) -> HookConnection:
            handle = await hooks.opal_broadcast_connect(url=url, options=dict(options), link=link)
            return cls(handle)

        @classmethod
        def check_channel(cls, url: BackboneURL, options: Mapping[str, Any], channel: str) -> None:
            hooks.opal_broadcast_check_channel(url=url, options=options, channel=channel)

        @classmethod
        def check_message(
            cls, url: BackboneURL, options: Mapping[str, Any], channel: str, message: str | bytes
        ) -> None:
            hooks.opal_broadcast_check_message(
                url=url, options=options, channel=channel, message=message
            )

        async def publish(self, channel: str, message: str | bytes) -> None:
            await hooks.opal_broadcast_publish(
                connection=self.handle, channel=channel, message=message
            )

        async def subscribe(self, channels: Sequence[str]) -> None:
            for channel in channels:
                await hooks.opal_broadcast_subscribe(connection=self.handle, channel=channel)

        async def unsubscribe(self, channels: Sequence[str]) -> None:
            for channel in channels:
                await _result(
                    hooks.opal_broadcast_unsubscribe(connection=self.handle, channel=channel)
                )

        async def probe(self) -> None:
            if probes:
                await _result(hooks.opal_broadcast_probe(connection=self.handle))

        async def close(self) -> None:
            await _result(hooks.opal_broadcast_disconnect(connection=self.handle))

    HookConnection.__qualname__ = HookConnection.__name__ = f"HookConnection[{name}]"
    return HookConnection
