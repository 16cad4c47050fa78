"""Run in opal-server's venv by test_opal_server.py: clients on each server, posts, what arrived.

Argument: JSON ``{"ports": [...], "clients": per server, "sizes": [bytes of each update]}``, and
optionally ``ready_file``/``go_file``: touch the first once subscribed, post once the second exists.
Prints JSON ``{"posted": [HTTP status...], "received": [[sizes seen by client]...]}``.
"""

import asyncio
import json
import os
import pathlib
import sys
import urllib.request

from fastapi_websocket_pubsub import PubSubClient

TOPIC = "policy_data"


async def main(
    ports: list[int], per_server: int, sizes: list[int], ready_file: str | None, go_file: str | None
) -> None:
    received: list[list[int]] = []
    clients = []
    for port in ports:
        for _ in range(per_server):
            seen: list[int] = []
            received.append(seen)

            async def on_update(data, topic, seen=seen):
                seen.append(len(data["entries"][0]["data"]["blob"]))

            client = PubSubClient([TOPIC], callback=on_update)
            client.start_client(f"ws://127.0.0.1:{port}/ws")
            await asyncio.wait_for(client.wait_until_ready(), 30)
            clients.append(client)
    await asyncio.sleep(1)  # subscriptions travel client -> server notifier
    if ready_file and go_file:  # let the test disturb the backbone before anything is posted
        await asyncio.to_thread(pathlib.Path(ready_file).touch)
        while not await asyncio.to_thread(os.path.exists, go_file):
            await asyncio.sleep(0.1)
    posted = []
    for size in sizes:
        body = {
            "entries": [{"url": "", "data": {"blob": "x" * size}, "topics": [TOPIC],
                         "dst_path": "/blob", "save_method": "PUT"}],
            "reason": "opal-broadcast test",
        }  # fmt: skip
        request = urllib.request.Request(
            f"http://127.0.0.1:{ports[0]}/data/config", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"}, method="POST",
        )  # fmt: skip
        status = await asyncio.to_thread(
            lambda r=request: urllib.request.urlopen(r, timeout=20).status
        )
        posted.append(status)
        for _ in range(200):
            if all(len(seen) == len(posted) for seen in received):
                break
            await asyncio.sleep(0.05)
    for client in clients:
        await client.disconnect()
    print(json.dumps({"posted": posted, "received": received}))


if __name__ == "__main__":
    arguments = json.loads(sys.argv[1])
    asyncio.run(
        main(
            arguments["ports"],
            arguments["clients"],
            arguments["sizes"],
            arguments.get("ready_file"),
            arguments.get("go_file"),
        )
    )
