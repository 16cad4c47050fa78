"""Three Redis servers (Debian's ``redis-server``), one per way of logging in.

========  =====  ==============================================================================
instance  port   login
========  =====  ==============================================================================
plain     26379  none
auth      26380  ``requirepass`` for the default user, plus ACL user ``opal`` with its password;
                 the same logins over TLS on 26382
tls       26381  TLS only (``port 0``); server cert from the test CA; client certs optional
========  =====  ==============================================================================

With ``tls-auth-clients optional`` a client that only verifies the server connects, and one that
presents the test client certificate has it verified. No persistence (``save ""``).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from ._proc import ensure_ports_free, pid_alive, read_pid, spawn_detached, terminate, wait_ready
from ._state import (
    HOST,
    REDIS_ACL_PASSWORD,
    REDIS_ACL_USER,
    REDIS_AUTH_PORT,
    REDIS_AUTH_TLS_PORT,
    REDIS_DEFAULT_PASSWORD,
    REDIS_LIMITED_PASSWORD,
    REDIS_LIMITED_USER,
    REDIS_PORT,
    REDIS_TLS_PORT,
    ServiceError,
    service_dir,
)
from ._tls import cert_paths

__all__ = ["is_ready", "is_running", "logs", "pids", "start", "stop", "urls"]

NAME = "redis"


@dataclass(frozen=True)
class _Instance:
    name: str
    port: int

    @property
    def dir(self) -> Path:
        path = service_dir(NAME) / self.name
        path.mkdir(exist_ok=True)
        return path

    @property
    def log(self) -> Path:
        return service_dir(NAME) / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return service_dir(NAME) / f"{self.name}.pid"

    def config(self) -> str:
        lines = [
            f"bind {HOST}",
            f"port {self.port}",
            "daemonize no",
            'save ""',
            "appendonly no",
            f"dir {self.dir}",
            'logfile ""',
        ]
        if self.name == "auth":
            lines += [
                f"requirepass {REDIS_DEFAULT_PASSWORD}",
                f"user {REDIS_ACL_USER} on >{REDIS_ACL_PASSWORD} ~* &* +@all",
                # May publish and subscribe on channels named allowed-* only.
                f"user {REDIS_LIMITED_USER} on >{REDIS_LIMITED_PASSWORD} ~* resetchannels "
                "&allowed-* +@all",
                *_tls_config(REDIS_AUTH_TLS_PORT),
            ]
        if self.name == "tls":
            lines += ["port 0", *_tls_config(self.port)]
        return "\n".join(lines) + "\n"

    def pid(self) -> int | None:
        pid = read_pid(self.pid_file)
        return pid if pid_alive(pid, "redis-server") else None

    def running(self) -> bool:
        return self.pid() is not None

    def outdated(self) -> bool:
        """Started from another version of :meth:`config` (``up`` restarts it)."""
        conf = self.dir / "redis.conf"
        return not conf.exists() or conf.read_text() != self.config()

    def ping(self) -> bool:
        """A real round trip in RESP over a socket (redis-py takes ~0.5 s just to import):
        AUTH as the ACL user where needed, TLS verified against the test CA, then PING."""
        commands = [b"PING"]
        if self.name == "auth":
            commands.insert(0, b"AUTH " + f"{REDIS_ACL_USER} {REDIS_ACL_PASSWORD}".encode())
        try:
            sock = socket.create_connection((HOST, self.port), timeout=2)
            with contextlib.ExitStack() as stack:
                stack.callback(sock.close)
                if self.name == "tls":
                    context = ssl.create_default_context(cafile=str(cert_paths().ca_file))
                    sock = context.wrap_socket(sock, server_hostname=HOST)
                    stack.callback(sock.close)  # the SSLSocket owns the fd now
                with sock.makefile("rwb") as stream:
                    stream.write(b"".join(command + b"\r\n" for command in commands))
                    stream.flush()
                    replies = [stream.readline() for _ in commands]
        except (OSError, ssl.SSLError):
            return False
        return replies[-1] == b"+PONG\r\n" and all(r.startswith(b"+") for r in replies)


def _tls_config(port: int) -> list[str]:
    """Serve TLS on ``port`` with the test CA's server certificate; client certs optional."""
    certs = cert_paths()
    return [
        f"tls-port {port}",
        f"tls-cert-file {certs.server_cert}",
        f"tls-key-file {certs.server_key}",
        f"tls-ca-cert-file {certs.ca_file}",
        "tls-auth-clients optional",
    ]


_INSTANCES = (
    _Instance("plain", REDIS_PORT),
    _Instance("auth", REDIS_AUTH_PORT),
    _Instance("tls", REDIS_TLS_PORT),
)


def urls() -> dict[str, str]:
    """``redis`` (no auth), ``redis_password`` (default user), ``redis_acl``, ``redis_limited``
    (an ACL user allowed channels ``allowed-*`` only), ``rediss`` (TLS),
    ``rediss_password`` (the default user's password over TLS)."""
    ca = cert_paths().ca_file
    return {
        "redis": f"redis://{HOST}:{REDIS_PORT}/0",
        "redis_password": f"redis://:{REDIS_DEFAULT_PASSWORD}@{HOST}:{REDIS_AUTH_PORT}/0",
        "redis_acl": f"redis://{REDIS_ACL_USER}:{REDIS_ACL_PASSWORD}@{HOST}:{REDIS_AUTH_PORT}/0",
        "redis_limited": (
            f"redis://{REDIS_LIMITED_USER}:{REDIS_LIMITED_PASSWORD}@{HOST}:{REDIS_AUTH_PORT}/0"
        ),
        "rediss": f"rediss://{HOST}:{REDIS_TLS_PORT}/0?ssl_ca_certs={ca}",
        "rediss_password": (
            f"rediss://:{REDIS_DEFAULT_PASSWORD}@{HOST}:{REDIS_AUTH_TLS_PORT}/0?ssl_ca_certs={ca}"
        ),
    }


def pids() -> list[int]:
    """Pids of the instances that run."""
    return [pid for pid in (instance.pid() for instance in _INSTANCES) if pid is not None]


def logs() -> list[Path]:
    """One log per instance."""
    return [instance.log for instance in _INSTANCES]


def is_running() -> bool:
    """Whether all three instances run."""
    return all(instance.running() for instance in _INSTANCES)


def is_ready() -> bool:
    """Whether all three instances answer PING, each with the config this version asks for."""
    return all(instance.ping() and not instance.outdated() for instance in _INSTANCES)


def start(timeout: float = 30.0) -> bool:
    """Start the instances that do not run (or run an outdated config) and wait for all; return
    False if none had to start."""
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    started = []
    for instance in _INSTANCES:
        if instance.running():
            if not instance.outdated():
                continue
            terminate(instance.pid(), timeout=15)  # started from an older version of this file
        ports = [instance.port, *([REDIS_AUTH_TLS_PORT] if instance.name == "auth" else [])]
        ensure_ports_free(f"{NAME} ({instance.name})", *ports)
        conf = instance.dir / "redis.conf"
        conf.write_text(instance.config())
        spawn_detached(
            [server, str(conf)], log=instance.log, pid_file=instance.pid_file, cwd=instance.dir
        )
        started.append(instance)
    for instance in _INSTANCES:
        wait_ready(
            f"{NAME} ({instance.name}, port {instance.port})",
            instance.ping,
            alive=instance.running,
            log=instance.log,
            timeout=timeout,
            interval=0.05,
        )
    return bool(started)


def stop(kill: bool = False) -> None:
    """SIGTERM (or SIGKILL with ``kill``) every instance and wait for it to exit."""
    for instance in _INSTANCES:
        try:
            terminate(instance.pid(), kill=kill, timeout=15)
        except ServiceError as exc:
            raise ServiceError(NAME, f"{instance.name}: {exc}", instance.log) from exc
