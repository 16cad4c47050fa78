"""The Kafka broker's jars: fetched once from Maven Central with ``kafka/pom.xml``.

The pom pins the version (read back by :func:`version`) and the SLF4J binding; Maven copies the
runtime classpath into ``~/.cache/opal-broadcast/kafka/lib-<version>/`` (one folder per version,
never mixed) and keeps its downloads in ``~/.m2``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from ._state import ServiceError, cache_dir, service_dir

__all__ = ["POM", "ensure_jars", "version"]

POM = Path(__file__).with_name("kafka") / "pom.xml"


def version() -> str:
    """The Kafka version pinned in ``kafka/pom.xml``."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(POM).getroot().find("m:properties/m:kafka.version", ns)
    if node is None or not node.text:
        raise ServiceError("kafka", f"no <kafka.version> property in {POM}")
    return node.text.strip()


def ensure_jars(timeout: float = 900.0) -> Path:
    """Download the broker's jars once (Maven); return the ``lib-<version>`` folder."""
    lib = cache_dir() / "kafka" / f"lib-{version()}"
    if (lib / ".complete").exists():
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError("kafka", "Maven (mvn) is not installed: apt-get install -y maven")
    work = lib.with_name(f"{lib.name}.tmp-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    log = service_dir("kafka") / "maven.log"
    argv = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={work}",
    ]
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(argv)}\n")
        out.flush()
        try:
            result = subprocess.run(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ServiceError("kafka", f"Maven did not finish in {timeout:.0f} s", log) from exc
    if result.returncode != 0 or not any(work.glob("kafka_2.13-*.jar")):
        shutil.rmtree(work, ignore_errors=True)
        raise ServiceError("kafka", "fetching the Kafka jars with Maven failed", log)
    (work / ".complete").write_text(version() + "\n")
    shutil.rmtree(lib, ignore_errors=True)
    work.rename(lib)
    return lib
