"""Run in opal-server's venv by test_opal_server.py: clients on every worker, posts, what arrived.

Argument: JSON with
- ``ports``: the OPAL servers; ``workers``: uvicorn workers per server; ``clients``: the fewest
  clients per server. Clients are added to a server until every one of its workers holds some
  (the kernel picks the worker; ``_sockets`` finds out which it was).
- ``sizes``: the byte size of each data update posted to the first server, in order.
- optionally ``ready_file``/``go_file``: touch the first once subscribed; once the second exists
  (the test has disturbed the backbone), post small probe updates to every server until every
  client has heard one posted to another server, for at most ``hear_deadline`` seconds, then
  post the updates.

Prints JSON ``{"posted": [HTTP status...], "clients": [{"server", "worker", "connects", "seen"}...],
and with ``go_file`` "heard_again_after": seconds or null, "failed_probes"}`` as its last line
(``seen`` leaves out the probes).
"""

import asyncio
import json
import os
import pathlib
import sys
import time
import urllib.request

from _sockets import own_ports_to, server_process
from fastapi_websocket_pubsub import PubSubClient

TOPIC = "policy_data"
PROBE = 10  # bytes: a probe posted to server i is PROBE + i bytes, smaller than any update
MEASURED = 100  # bytes: the smallest measured update
MOST_CLIENTS_PER_SERVER = 40  # the kernel may hand a worker many connections in a row


async def connect(port: int) -> tuple[PubSubClient, dict]:
    """One client subscribed to OPAL's data topic on ``port``; its record for the report."""
    record: dict = {"server": port, "worker": None, "connects": 0, "probes_from": [], "seen": []}

    async def on_update(data, topic):
        size = len(data["entries"][0]["data"]["blob"])
        if size < MEASURED:
            record["probes_from"].append(size - PROBE)
        else:
            record["seen"].append(size)

    async def on_connect(client, channel):  # after the topics are subscribed
        record["connects"] += 1

    before = own_ports_to(port)
    client = PubSubClient([TOPIC], callback=on_update, on_connect=[on_connect])
    client.start_client(f"ws://127.0.0.1:{port}/ws")
    await asyncio.wait_for(client.wait_until_ready(), 30)
    (local_port,) = own_ports_to(port) - before
    record["worker"] = server_process(port, local_port)
    return client, record


def heard_through_the_backbone(record: dict, ports: list[int]) -> bool:
    """Whether the client heard a probe posted to another server (its own server's probe may
    reach it without the backbone: a worker sends what it takes straight to its own clients)."""
    own = ports.index(record["server"])
    return any(server != own for server in record["probes_from"]) or len(ports) == 1


async def post(port: int, size: int) -> int:
    body = {
        "entries": [{"url": "", "data": {"blob": "x" * size}, "topics": [TOPIC],
                     "dst_path": "/blob", "save_method": "PUT"}],
        "reason": "opal-broadcast test",
    }  # fmt: skip
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/data/config", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}, method="POST",
    )  # fmt: skip
    return await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=20).status)


async def main(arguments: dict) -> None:
    clients, records = [], []
    for port in arguments["ports"]:

        def on_server(port=port):
            return [record for record in records if record["server"] == port]

        while (
            len({record["worker"] for record in on_server()}) < arguments["workers"]
            or len(on_server()) < arguments["clients"]
        ) and len(on_server()) < MOST_CLIENTS_PER_SERVER:  # past that, the report shows the gap
            client, record = await connect(port)
            clients.append(client)
            records.append(record)
    await asyncio.sleep(1)  # subscriptions travel client -> server notifier
    report: dict = {}
    if arguments.get("ready_file"):  # let the test disturb the backbone before anything is posted
        await asyncio.to_thread(pathlib.Path(arguments["ready_file"]).touch)
        while not await asyncio.to_thread(os.path.exists, arguments["go_file"]):
            await asyncio.sleep(0.1)
        report.update(heard_again_after=None, failed_probes=0)
        started = time.monotonic()
        while time.monotonic() - started < arguments["hear_deadline"]:
            for index, port in enumerate(arguments["ports"]):
                try:
                    await post(port, PROBE + index)
                except OSError:  # HTTPError included: the server may answer 500 meanwhile
                    report["failed_probes"] += 1
            await asyncio.sleep(0.5)
            if all(heard_through_the_backbone(record, arguments["ports"]) for record in records):
                report["heard_again_after"] = round(time.monotonic() - started, 1)
                break
    posted = []
    for size in arguments["sizes"]:
        posted.append(await post(arguments["ports"][0], size))
        for _ in range(200):
            if all(len(record["seen"]) == len(posted) for record in records):
                break
            await asyncio.sleep(0.05)
    for client in clients:
        await client.disconnect()
    print(json.dumps({"posted": posted, "clients": records, **report}))


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
