"""One PostgreSQL cluster (Debian's package) on 127.0.0.1:25432 serving every test login.

A single cluster is cheaper than one per auth mode; ``pg_hba.conf`` decides per role:

============  ==========================================  =====================================
role          how it logs in                              for testing
============  ==========================================  =====================================
opal          trust, TCP with or without TLS              the main tests (owns database opal)
opal_pw       scram-sha-256 password, with or without TLS  password auth, wrong password
opal_tls      trust, but only over TLS (``hostssl``)      that ``sslmode`` really used TLS
opal_cert     TLS client certificate, CN=opal_cert        client-certificate options
postgres      trust (superuser)                           fault helpers (pg_terminate_backend)
============  ==========================================  =====================================

TLS is offered to everyone (``ssl=on``) with a server certificate from the test CA, so
``sslmode=verify-full`` with ``sslrootcert=<ca.pem>`` works. ``initdb``/``pg_ctl`` refuse root, so
as root they run as the ``postgres`` OS user. Durability is off (``fsync=off``): test data only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ._install import postgres_bin_dir
from ._proc import ensure_ports_free, pid_alive, read_pid, wait_ready
from ._state import (
    HOST,
    PG_CERT_USER,
    PG_DB,
    PG_PASSWORD,
    PG_PASSWORD_USER,
    PG_PORT,
    PG_TLS_USER,
    PG_USER,
    ServiceError,
    service_dir,
)
from ._tls import cert_paths

__all__ = ["is_ready", "is_running", "logs", "pids", "start", "stop", "urls"]

NAME = "postgres"
_OS_USER = "postgres"

_HBA = f"""\
# Written by tests/services/_postgres.py on every start.
# TYPE  DATABASE  USER  ADDRESS  METHOD
local   all  all  trust
hostssl all  {PG_CERT_USER}  {HOST}/32  cert
host    all  {PG_CERT_USER}  {HOST}/32  reject
hostssl all  {PG_TLS_USER}  {HOST}/32  trust
host    all  {PG_TLS_USER}  {HOST}/32  reject
host    all  {PG_PASSWORD_USER}  {HOST}/32  scram-sha-256
host    all  all  {HOST}/32  trust
"""

# Run through psql as the superuser after every start by us: idempotent, keeps passwords in sync.
_PROVISION = f"""\
SELECT format('CREATE ROLE %I LOGIN', r) FROM unnest(ARRAY[
  '{PG_USER}', '{PG_PASSWORD_USER}', '{PG_TLS_USER}', '{PG_CERT_USER}']) AS r
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) \\gexec
ALTER ROLE {PG_PASSWORD_USER} PASSWORD '{PG_PASSWORD}';
SELECT 'CREATE DATABASE {PG_DB} OWNER {PG_USER}'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{PG_DB}') \\gexec
"""


def _dir() -> Path:
    return service_dir(NAME)


def _data() -> Path:
    return _dir() / "data"


def _log() -> Path:
    return _dir() / "postgres.log"


def _bin(tool: str) -> str:
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise ServiceError(NAME, "no PostgreSQL server found under /usr/lib/postgresql")
    return str(bin_dir / tool)


def urls() -> dict[str, str]:
    """The URLs tests use; ``postgres_tls`` verifies the server against the test CA."""
    base = f"{HOST}:{PG_PORT}/{PG_DB}"
    ca = cert_paths().ca_file
    return {
        "postgres": f"postgresql://{PG_USER}@{base}",
        "postgres_password": f"postgresql://{PG_PASSWORD_USER}:{PG_PASSWORD}@{base}",
        "postgres_tls": f"postgresql://{PG_TLS_USER}@{base}?sslmode=verify-full&sslrootcert={ca}",
        "postgres_admin": f"postgresql://postgres@{HOST}:{PG_PORT}/postgres",
    }


def pids() -> list[int]:
    """The postmaster's pid if it runs."""
    pid = read_pid(_data() / "postmaster.pid")
    return [pid] if pid is not None and pid_alive(pid, "postgres") else []


def logs() -> list[Path]:
    """The server log."""
    return [_log()]


def is_running() -> bool:
    """Whether the postmaster process is alive."""
    return bool(pids())


def is_ready() -> bool:
    """A real round trip: ``SELECT 1`` over TCP as the main role."""
    return _psql(f"postgresql://{PG_USER}@{HOST}:{PG_PORT}/{PG_DB}", "SELECT 1", timeout=5) == "1"


def start(timeout: float = 60.0) -> bool:
    """Initialise (once), start and provision the cluster; return False if it already ran."""
    if is_running():
        wait_ready(NAME, is_ready, alive=is_running, log=_log(), timeout=timeout)
        return False
    ensure_ports_free(NAME, PG_PORT)
    _prepare()
    result = _pg_ctl("start", "-w", "-t", str(int(timeout)), "-l", str(_log()))
    if result.returncode != 0:
        raise ServiceError(NAME, f"pg_ctl start failed: {result.stdout.strip()}", _log())
    admin = f"postgresql:///postgres?host={_dir() / 'run'}&port={PG_PORT}&user=postgres"
    if _psql(admin, _PROVISION, timeout=30) is None:
        raise ServiceError(NAME, "creating the test roles failed", _log())
    wait_ready(NAME, is_ready, alive=is_running, log=_log(), timeout=timeout)
    return True


def stop(kill: bool = False) -> None:
    """``pg_ctl stop``: mode fast, or immediate (no clean shutdown) when ``kill``."""
    if not is_running():
        return
    result = _pg_ctl("stop", "-w", "-t", "60", "-m", "immediate" if kill else "fast")
    if result.returncode != 0 and is_running():
        raise ServiceError(NAME, f"pg_ctl stop failed: {result.stdout.strip()}", _log())


def _prepare() -> None:
    """initdb on first use; (re)write config, hba and the TLS files on every start."""
    root, data, run = _dir(), _data(), _dir() / "run"
    run.mkdir(exist_ok=True)
    _log().touch()
    for path in (root, run, _log()):
        _own(path)
    # Only called when no postmaster runs: lock files left by a killed server go, or a recycled
    # pid in them (another process after a reboot or a sandbox restart) would block the start.
    for stale in (data / "postmaster.pid", run / f".s.PGSQL.{PG_PORT}.lock"):
        stale.unlink(missing_ok=True)
    if not (data / "PG_VERSION").exists():
        shutil.rmtree(data, ignore_errors=True)
        result = _run_as_owner(
            [
                _bin("initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            ]
        )
        if result.returncode != 0:
            raise ServiceError(NAME, f"initdb failed:\n{result.stdout.strip()}")
        with (data / "postgresql.conf").open("a") as conf:
            conf.write("\ninclude = 'opal_test.conf'\n")
    certs = cert_paths()
    tls = root / "tls"  # private copies: the server insists on owning its key
    tls.mkdir(exist_ok=True)
    for src, dst in (
        (certs.server_cert, "server.pem"),
        (certs.server_key, "server.key"),
        (certs.ca_file, "ca.pem"),
    ):
        shutil.copyfile(src, tls / dst)
        (tls / dst).chmod(0o600)
        _own(tls / dst)
    _own(tls)
    settings = {
        "listen_addresses": HOST,
        "port": str(PG_PORT),
        "unix_socket_directories": str(run),
        "max_connections": "100",
        "shared_buffers": "32MB",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "ssl": "on",
        "ssl_cert_file": str(tls / "server.pem"),
        "ssl_key_file": str(tls / "server.key"),
        "ssl_ca_file": str(tls / "ca.pem"),
        "password_encryption": "scram-sha-256",
    }
    conf_text = "".join(f"{key} = '{value}'\n" for key, value in settings.items())
    for path, text in ((data / "opal_test.conf", conf_text), (data / "pg_hba.conf", _HBA)):
        path.write_text(text)
        _own(path)


def _pg_ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return _run_as_owner([_bin("pg_ctl"), "-D", str(_data()), "-s", *args])


def _owner_kwargs() -> dict[str, Any]:
    """Popen arguments that drop root to the postgres OS user (initdb and postgres refuse root)."""
    if os.geteuid() != 0:
        return {}
    return {"user": _OS_USER, "group": _OS_USER, "extra_groups": []}


def _own(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, _OS_USER, _OS_USER)


def _run_as_owner(argv: list[str]) -> subprocess.CompletedProcess[str]:
    # cwd must be readable by the postgres user; the caller's (e.g. /root/...) may not be.
    return subprocess.run(
        argv,
        cwd=_dir(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
        start_new_session=True,
        **_owner_kwargs(),
    )


def _psql(dsn: str, sql: str, *, timeout: float) -> str | None:
    """Run ``sql`` through psql (tuples only, unaligned); its output, or None on any failure."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["PGCONNECT_TIMEOUT"] = "3"
    try:
        result = subprocess.run(
            [_bin("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", "-"],
            input=sql,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    return result.stdout.strip() if result.returncode == 0 else None
