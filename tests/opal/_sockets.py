"""Which local process holds a loopback TCP connection: how the tests tell uvicorn workers apart.

OPAL does not say which worker took a websocket, so the tests ask the kernel: ``/proc/net/tcp``
maps a connection to its socket inode, and ``/proc/PID/fd`` maps the inode to the process.
Linux only, IPv4 loopback only, standard library only (it also runs in opal-server's venv).
"""

from __future__ import annotations

import os
from pathlib import Path

_ESTABLISHED = "01"


def _connections() -> dict[tuple[int, int], str]:
    """``{(local port, remote port): socket inode}`` for every established IPv4 connection."""
    found = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
        if state == _ESTABLISHED:
            found[(int(local.split(":")[1], 16), int(remote.split(":")[1], 16))] = inode
    return found


def _sockets_of(pid: str) -> set[str]:
    """The socket inodes process ``pid`` holds (empty when it is gone or not ours to read)."""
    inodes = set()
    try:
        for fd in os.scandir(f"/proc/{pid}/fd"):
            target = os.readlink(fd.path)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def own_ports_to(server_port: int) -> set[int]:
    """The local ports of this process's connections to ``server_port``."""
    mine = _sockets_of("self")
    return {
        local
        for (local, remote), inode in _connections().items()
        if remote == server_port and inode in mine
    }


def server_process(server_port: int, client_port: int) -> int | None:
    """The pid of the process holding the server side of ``client_port`` -> ``server_port``."""
    inode = _connections().get((server_port, client_port))
    if inode is None:
        return None
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and inode in _sockets_of(entry.name):
            return int(entry.name)
    return None
