"""Fixed ports, test credentials, and where the services keep their files.

Everything a server writes lives under one state directory (``OPAL_TEST_SERVICES_DIR``, default
``/tmp/opal-broadcast-services``): ``<name>/`` holds each server's data, config, log and pid, and
``urls.json`` the URLs written by ``up``. Downloads that should survive a wiped state directory
(the Kafka jars) live under ``~/.cache/opal-broadcast``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = [
    "HOST",
    "KAFKA_CONTROLLER_PORT",
    "KAFKA_PORT",
    "KAFKA_SASL_PASSWORD",
    "KAFKA_SASL_PORT",
    "KAFKA_SASL_USER",
    "NAMES",
    "PG_CERT_USER",
    "PG_DB",
    "PG_PASSWORD",
    "PG_PASSWORD_USER",
    "PG_PORT",
    "PG_TLS_USER",
    "PG_USER",
    "REDIS_ACL_PASSWORD",
    "REDIS_ACL_USER",
    "REDIS_AUTH_PORT",
    "REDIS_AUTH_TLS_PORT",
    "REDIS_DEFAULT_PASSWORD",
    "REDIS_LIMITED_PASSWORD",
    "REDIS_LIMITED_USER",
    "REDIS_PORT",
    "REDIS_TLS_PORT",
    "ServiceError",
    "cache_dir",
    "log_tail",
    "service_dir",
    "state_dir",
    "write_urls",
]

NAMES = ("postgres", "redis", "kafka")
"""The services, in start order (``down`` stops them in reverse)."""

HOST = "127.0.0.1"
# Below Linux's ephemeral range (32768-60999): a client retrying a stopped server's port would
# otherwise, now and then, be given that very port as its own and connect to itself, and the
# restarted server could not bind it ("Address already in use").
PG_PORT = 25432
REDIS_PORT = 26379
REDIS_AUTH_PORT = 26380
REDIS_TLS_PORT = 26381
REDIS_AUTH_TLS_PORT = 26382
KAFKA_PORT = 29092
KAFKA_CONTROLLER_PORT = 29093
KAFKA_SASL_PORT = 29094

# Test-only credentials, on loopback-only servers. Plain ASCII so URLs need no percent-encoding.
PG_USER = "opal"  # trust login, owns database "opal"
PG_DB = "opal"
PG_PASSWORD_USER = "opal_pw"  # must give PG_PASSWORD (scram-sha-256)
PG_PASSWORD = "opal-pw-secret"
PG_TLS_USER = "opal_tls"  # trust login, but only over TLS (hostssl); plain TCP is rejected
PG_CERT_USER = "opal_cert"  # TLS + client certificate with CN=opal_cert (the test CA's client cert)
REDIS_DEFAULT_PASSWORD = "opal-default-secret"  # requirepass of the "default" user on 26380
REDIS_ACL_USER = "opal"
REDIS_ACL_PASSWORD = "opal-acl-secret"
REDIS_LIMITED_USER = "opal_limited"
REDIS_LIMITED_PASSWORD = "opal-limited-secret"
KAFKA_SASL_USER = "opal"
KAFKA_SASL_PASSWORD = "opal-sasl-secret"


class ServiceError(RuntimeError):
    """A test service could not be installed, started, stopped or reached.

    The message names the service and, when there is one, the log file and its last lines.
    """

    def __init__(self, name: str, message: str, log: Path | None = None) -> None:
        self.name = name
        self.log = log
        text = f"{name}: {message}"
        if log is not None:
            tail = log_tail(log)
            text += f"\nlog: {log}"
            text += f"\n--- last lines of {log.name} ---\n{tail}" if tail else " (empty)"
        super().__init__(text)


def state_dir() -> Path:
    """The root of all server state; created world-traversable so the postgres user can reach it."""
    path = Path(os.environ.get("OPAL_TEST_SERVICES_DIR") or "/tmp/opal-broadcast-services")
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o755)
    return path


def service_dir(name: str) -> Path:
    """``<state dir>/<name>``, created if missing."""
    path = state_dir() / name
    path.mkdir(exist_ok=True)
    return path


def cache_dir() -> Path:
    """Downloads kept across state-directory wipes: ``$XDG_CACHE_HOME/opal-broadcast``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base) / "opal-broadcast"
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file, or ``""`` if it is missing or empty."""
    try:
        with path.open("rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(0, file.tell() - 64 * 1024))
            data = file.read()
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def write_urls(urls: dict[str, str]) -> Path:
    """Write ``urls.json`` atomically, for tools that are not Python; return its path."""
    path = state_dir() / "urls.json"
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(urls, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path
