"""Run in opal-server's venv by test_opal_server.py: clients on every worker, posts, what arrived.

Argument: JSON with
- ``ports``: the OPAL servers; ``workers``: uvicorn workers per server; ``clients``: the fewest
  clients per server. Clients are added to a server until every one of its workers holds some
  (the kernel picks the worker; ``_sockets`` finds out which it was).
- ``sizes``: the byte size of each data update posted to the first server, in order, each one
  awaited by every client before the next is posted (the last step).
- optionally ``ready_file``/``go_file``: touch the first once subscribed; once the second exists
  (the test has disturbed the backbone), post small probe updates to every server until every
  client has heard one posted to another server, for at most ``hear_deadline`` seconds, then
  post the updates. With ``settle`` (seconds), wait on until no client has connected or been
  disconnected for that long (OPAL's resync closes clients' websockets after a gap; they
  reconnect, maybe to another worker) and every worker holds a client again, adding clients
  where one holds none.
- optionally ``before``/``after``: batches of updates (their sizes), posted in turns to every
  server at 10 a second, before ``ready_file`` is touched and after the recovery above.

A client's connection is a session: the worker that took it, when it was up (after its
subscription) and down, and which updates and probes it received. Prints JSON ``{"posted":
[HTTP status...], "clients": [{"server", "worker", "connects", "seen", "sessions"}...],
"updates": [{"id", "batch", "server", "status", "posted_at"}...], "batch_ends": {batch: time},
and with ``go_file`` "heard_again_after": seconds or null, "settled_after", "failed_probes"}``
as its last line (``seen`` is the sizes of ``sizes``'s updates, in order of arrival; times are
this process's monotonic clock).
"""

import asyncio
import json
import os
import pathlib
import sys
import time
import urllib.request

from _sockets import server_process
from fastapi_websocket_pubsub import PubSubClient

TOPIC = "policy_data"
MOST_CLIENTS_PER_SERVER = 40  # the kernel may hand a worker many connections in a row
RATE = 10  # batch updates posted per second
DELIVERY_DEADLINE = 20  # seconds for every update of a step to reach its clients


async def connect(port: int) -> tuple[PubSubClient, dict]:
    """One client subscribed to OPAL's data topic on ``port``; its record for the report."""
    record: dict = {"server": port, "worker": None, "connects": 0, "seen": [], "sessions": []}

    async def on_update(data, topic):
        if not record["sessions"]:  # subscribed, on_connect not run yet: posted before it was up
            return
        entry = data["entries"][0]["data"]
        session = record["sessions"][-1]
        if entry["id"].startswith("probe-"):
            session["probes_from"].append(int(entry["id"].split("-")[1]))
        else:
            session["got"].append(entry["id"])
            if entry["id"].startswith("sizes-"):
                record["seen"].append(len(entry["blob"]))

    async def on_connect(client, channel):  # after the topics are subscribed
        websocket = channel.socket._websocket._websocket  # json layer, client handler, websockets
        worker = server_process(port, websocket.local_address[1])
        record["connects"] += 1
        record["worker"] = record["worker"] or worker
        session = {"worker": worker, "up": time.monotonic(), "down": None}
        record["sessions"].append({**session, "got": [], "probes_from": []})

    async def on_disconnect(channel):
        if record["sessions"] and record["sessions"][-1]["down"] is None:
            record["sessions"][-1]["down"] = time.monotonic()

    client = PubSubClient(
        [TOPIC], callback=on_update, on_connect=[on_connect], on_disconnect=[on_disconnect]
    )
    client.start_client(f"ws://127.0.0.1:{port}/ws")
    await asyncio.wait_for(client.wait_until_ready(), 30)
    while not record["sessions"]:  # on_connect runs right after the client is ready
        await asyncio.sleep(0.01)
    return client, record


async def post(port: int, size: int, update_id: str) -> int:
    body = {
        "entries": [{"url": "", "data": {"id": update_id, "blob": "x" * size}, "topics": [TOPIC],
                     "dst_path": "/blob", "save_method": "PUT"}],
        "reason": "opal-broadcast test",
    }  # fmt: skip
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/data/config", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}, method="POST",
    )  # fmt: skip
    return await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=20).status)


class Run:
    """The clients, the updates posted, and what each session received."""

    def __init__(self, arguments: dict) -> None:
        self.arguments = arguments
        self.ports: list[int] = arguments["ports"]
        self.clients: list[PubSubClient] = []
        self.records: list[dict] = []
        self.updates: list[dict] = []
        self.batch_ends: dict[str, float] = {}

    def on_server(self, port: int) -> list[dict]:
        return [record for record in self.records if record["server"] == port]

    def open_sessions(self) -> list[dict]:
        return [r["sessions"][-1] for r in self.records if r["sessions"][-1]["down"] is None]

    def uncovered(self) -> list[int]:
        """The servers with a worker that holds no open session (or too few sessions)."""
        return [
            port
            for port in self.ports
            if len(self.on_server(port)) < MOST_CLIENTS_PER_SERVER
            and (
                len({s["worker"] for s in self.open_sessions_on(port)}) < self.arguments["workers"]
                or len(self.on_server(port)) < self.arguments["clients"]
            )
        ]

    def open_sessions_on(self, port: int) -> list[dict]:
        return [
            r["sessions"][-1] for r in self.on_server(port) if r["sessions"][-1]["down"] is None
        ]

    async def add_clients(self) -> None:
        """Connect clients until every worker holds an open session (past the cap, the report
        shows the gap)."""
        while uncovered := self.uncovered():
            for port in uncovered:
                client, record = await connect(port)
                self.clients.append(client)
                self.records.append(record)

    def last_connection_event(self) -> float:
        return max(
            max(session["up"], session["down"] or 0)
            for record in self.records
            for session in record["sessions"]
        )

    def everyone_heard(self) -> bool:
        """Every client is connected and has heard, on that connection, a probe posted to
        another server (its own server's probe may reach it without the backbone: a worker
        sends what it takes straight to its own clients)."""
        if len(self.ports) == 1:
            return True
        return all(
            record["sessions"][-1]["down"] is None
            and any(
                server != self.ports.index(record["server"])
                for server in record["sessions"][-1]["probes_from"]
            )
            for record in self.records
        )

    async def recover(self, report: dict) -> None:
        """Probe until every client hears through the backbone again, and with ``settle``,
        until that has held for ``settle`` seconds without a client connecting or leaving."""
        settle = self.arguments.get("settle", 0)
        report.update(heard_again_after=None, settled_after=None, failed_probes=0)
        started = time.monotonic()
        heard_since = None
        while time.monotonic() - started < self.arguments["hear_deadline"]:
            for index, port in enumerate(self.ports):
                try:
                    await post(port, 10, f"probe-{index}")
                except OSError:  # HTTPError included: the server may answer 500 meanwhile
                    report["failed_probes"] += 1
            await asyncio.sleep(0.5)
            now = time.monotonic()
            if not self.everyone_heard():
                heard_since = None
            elif heard_since is None:
                heard_since = now
                if report["heard_again_after"] is None:
                    report["heard_again_after"] = round(now - started, 1)
            if settle and now - self.last_connection_event() >= settle and self.uncovered():
                await self.add_clients()  # OPAL's resync moved every client off a worker
                heard_since = None
            elif (
                heard_since is not None
                and now - max(heard_since, self.last_connection_event()) >= settle
            ):
                report["settled_after"] = round(now - started, 1)
                return

    async def post_batch(self, batch: str, sizes: list[int]) -> None:
        """Post the batch in turns to every server at RATE a second; wait until every session
        that was up before an update was posted has it or is down, for DELIVERY_DEADLINE."""
        if not sizes:
            return
        for n, size in enumerate(sizes):
            index = n % len(self.ports)
            update = {"id": f"{batch}-{n}", "batch": batch, "server": index}
            update["posted_at"] = time.monotonic()
            try:
                update["status"] = await post(self.ports[index], size, update["id"])
            except OSError as exc:
                update["status"] = getattr(exc, "code", repr(exc))
            self.updates.append(update)
            await asyncio.sleep(max(0.0, update["posted_at"] + 1 / RATE - time.monotonic()))
        posted = [u for u in self.updates if u["batch"] == batch]
        deadline = time.monotonic() + DELIVERY_DEADLINE
        while time.monotonic() < deadline and not all(
            update["id"] in session["got"]
            for update in posted
            for session in self.open_sessions()
            if session["up"] < update["posted_at"]
        ):
            await asyncio.sleep(0.05)
        self.batch_ends[batch] = time.monotonic()

    async def post_one_by_one(self, sizes: list[int]) -> list[int]:
        """Post each update to the first server once every client has the one before."""
        posted = []
        for n, size in enumerate(sizes):
            posted.append(await post(self.ports[0], size, f"sizes-{n}"))
            for _ in range(200):
                if all(len(record["seen"]) == len(posted) for record in self.records):
                    break
                await asyncio.sleep(0.05)
        return posted

    async def main(self) -> None:
        arguments = self.arguments
        await self.add_clients()
        await asyncio.sleep(1)  # subscriptions travel client -> server notifier
        report: dict = {}
        await self.post_batch("before", arguments.get("before", []))
        if arguments.get("ready_file"):  # let the test disturb the backbone
            await asyncio.to_thread(pathlib.Path(arguments["ready_file"]).touch)
            while not await asyncio.to_thread(os.path.exists, arguments["go_file"]):
                await asyncio.sleep(0.1)
            await self.recover(report)
        await self.post_batch("after", arguments.get("after", []))
        posted = await self.post_one_by_one(arguments.get("sizes", []))
        for client in self.clients:
            await client.disconnect()
        print(
            json.dumps(
                {
                    "posted": posted,
                    "clients": self.records,
                    "updates": self.updates,
                    "batch_ends": self.batch_ends,
                    **report,
                }
            )
        )


if __name__ == "__main__":
    asyncio.run(Run(json.loads(sys.argv[1])).main())
