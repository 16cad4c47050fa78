"""Install the Debian packages the services need, once, when they are missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from ._state import ServiceError, state_dir

__all__ = ["ensure_packages", "postgres_bin_dir"]


def postgres_bin_dir() -> Path | None:
    """``/usr/lib/postgresql/<major>/bin`` of the newest installed server, or None."""
    found = [
        path.parent
        for path in Path("/usr/lib/postgresql").glob("*/bin/postgres")
        if path.parent.parent.name.isdigit()
    ]
    return max(found, key=lambda path: int(path.parent.name), default=None)


def _missing(name: str) -> list[str]:
    """The Debian packages service ``name`` needs that are not installed."""
    if name == "postgres":
        return [] if postgres_bin_dir() and shutil.which("psql") else ["postgresql"]
    if name == "redis":
        return (
            []
            if shutil.which("redis-server") or Path("/usr/bin/redis-server").exists()
            else ["redis-server"]
        )
    if name == "kafka":
        needs = {"java": "openjdk-17-jre-headless", "mvn": "maven"}
        return [package for tool, package in needs.items() if not shutil.which(tool)]
    if name == "tls":
        return [] if shutil.which("openssl") else ["openssl"]
    if name == "nats":  # the example plugin's own tests start their nats-server
        return [] if shutil.which("nats-server") else ["nats-server"]
    raise ValueError(f"unknown service {name!r}")


def ensure_packages(names: Iterable[str]) -> list[str]:
    """Install (with apt-get, as root) what ``names`` need; return the packages installed.

    Debian's postinst scripts may start a default cluster/server on the standard ports (5432,
    6379) unless ``/usr/sbin/policy-rc.d`` forbids it; the test servers use their own ports and
    data directories, so those are left alone.
    """
    packages = sorted({package for name in names for package in _missing(name)})
    if not packages:
        return []
    command = "apt-get install -y --no-install-recommends " + " ".join(packages)
    if os.geteuid() != 0:
        raise ServiceError("install", f"missing Debian packages; run as root: {command}")
    log = state_dir() / "apt.log"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with log.open("a") as out:
        for argv in (
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        ):
            out.write(f"\n$ {' '.join(argv)}\n")
            out.flush()
            result = subprocess.run(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, check=False
            )
            if result.returncode != 0:
                raise ServiceError("install", f"`{' '.join(argv)}` failed", log)
    return packages
