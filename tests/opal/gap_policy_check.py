"""Run in opal-server's venv by test_opal_server.py: what a reader of the ``Broadcast`` class that
``opal_broadcast_opal.install()`` gives fastapi_websocket_pubsub does at a gap.

Argument: a ``memory://`` URL (with or without a ``gap_policy`` query); OPAL's settings come from
the environment. Subscribes, drops the bus's connections, publishes until something arrives,
and prints ``continues`` (the iteration carried on and received) or ``ends`` (it ended with
``SubscriptionGap``).
"""

import asyncio
import contextlib
import sys

import opal_broadcast_opal
from fastapi_websocket_pubsub import event_broadcaster

from opal_broadcast import BackboneUnavailable, SubscriptionGap
from opal_broadcast._memory import simulate_loss  # opal_broadcast.testing needs pytest


async def main(url: str) -> str:
    opal_broadcast_opal.install()
    async with (
        event_broadcaster.Broadcast(url) as broadcast,
        broadcast.subscribe(channel="EventNotifier") as subscriber,
    ):

        async def publish_until_cancelled() -> None:
            while True:
                with contextlib.suppress(BackboneUnavailable):
                    await broadcast.publish("EventNotifier", "after the gap")
                await asyncio.sleep(0.05)

        simulate_loss(url.partition("?")[0], stay_down=False)
        publisher = asyncio.create_task(publish_until_cancelled())
        try:
            async with asyncio.timeout(10):
                async for _ in subscriber:
                    return "continues"
        except SubscriptionGap:
            return "ends"
        finally:
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
    return "ended without SubscriptionGap"


if __name__ == "__main__":
    print(asyncio.run(main(sys.argv[1])))
