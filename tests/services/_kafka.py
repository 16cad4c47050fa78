"""A single-node Apache Kafka 4.x (KRaft, combined broker+controller) from Maven Central jars.

The jars come from ``_kafka_jars`` (Maven, cached). Listeners, all on 127.0.0.1: PLAINTEXT
29092, CONTROLLER 29093 (not advertised), SASL_PLAINTEXT/PLAIN 29094 with user ``opal``. Internal topics use replication factor 1, or groups would get no coordinator.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import struct
import subprocess
import uuid
from pathlib import Path

from ._kafka_jars import ensure_jars
from ._proc import (
    ensure_ports_free,
    pid_alive,
    read_pid,
    run_async,
    spawn_detached,
    terminate,
    wait_ready,
)
from ._state import (
    HOST,
    KAFKA_CONTROLLER_PORT,
    KAFKA_PORT,
    KAFKA_SASL_PASSWORD,
    KAFKA_SASL_PORT,
    KAFKA_SASL_USER,
    ServiceError,
    service_dir,
)

__all__ = [
    "is_ready",
    "is_running",
    "logs",
    "pids",
    "start",
    "stop",
    "urls",
]

NAME = "kafka"
_HEAP = ["-Xms256m", "-Xmx512m"]
_READY_TOPIC = "opal-services-ready"


def _dir() -> Path:
    return service_dir(NAME)


def _log() -> Path:
    return _dir() / "kafka.log"


def _properties() -> str:
    jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'user_{KAFKA_SASL_USER}="{KAFKA_SASL_PASSWORD}";'
    )
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{KAFKA_CONTROLLER_PORT}",
        "controller.listener.names": "CONTROLLER",
        "listeners": f"PLAINTEXT://{HOST}:{KAFKA_PORT},CONTROLLER://{HOST}:{KAFKA_CONTROLLER_PORT},"
        f"SASL://{HOST}:{KAFKA_SASL_PORT}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{KAFKA_PORT},SASL://{HOST}:{KAFKA_SASL_PORT}",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,"
        "SASL:SASL_PLAINTEXT",
        "listener.name.sasl.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl.plain.sasl.jaas.config": jaas,
        "log.dirs": str(_dir() / "data"),
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "default.replication.factor": "1",
        "num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
        # After a SIGKILL the restarted broker cannot register (DUPLICATE_BROKER_REGISTRATION)
        # until its old session expires: 9 s by default. Heartbeats stay frequent enough (6 per
        # session) that a busy 2-core machine does not fence a live broker.
        "broker.heartbeat.interval.ms": "500",
        "broker.session.timeout.ms": "3000",
        "auto.create.topics.enable": "true",
        "num.network.threads": "2",
        "num.io.threads": "2",
        "log.cleaner.dedupe.buffer.size": "1048577",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def urls() -> dict[str, str]:
    """``kafka`` (PLAINTEXT) and ``kafka_sasl`` (SASL_PLAINTEXT, PLAIN, user in the URL)."""
    return {
        "kafka": f"kafka://{HOST}:{KAFKA_PORT}",
        "kafka_sasl": f"kafka://{KAFKA_SASL_USER}:{KAFKA_SASL_PASSWORD}@{HOST}:{KAFKA_SASL_PORT}"
        "?security_protocol=SASL_PLAINTEXT&sasl_mechanism=PLAIN",
    }


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise ServiceError(
            NAME, "Java 17+ is not installed: apt-get install -y openjdk-17-jre-headless"
        )
    return java


def pids() -> list[int]:
    """The broker JVM's pid if it runs."""
    pid = read_pid(_dir() / "kafka.pid")
    return [pid] if pid is not None and pid_alive(pid, "kafka.Kafka") else []


def logs() -> list[Path]:
    """The broker log (slf4j-simple on stderr)."""
    return [_log()]


def is_running() -> bool:
    """Whether the broker JVM is alive."""
    return bool(pids())


def is_ready() -> bool:
    """Quick check: both client listeners answer a Kafka ApiVersions request."""
    return _api_versions(KAFKA_PORT) and _api_versions(KAFKA_SASL_PORT)


def start(timeout: float = 90.0) -> bool:
    """Fetch jars, format (once), start the broker and wait for a produce/consume round trip."""
    if not is_running():
        _launch(ensure_jars())
        launched = True
    else:
        launched = False
    wait_ready(NAME, is_ready, alive=is_running, log=_log(), timeout=timeout, interval=0.2)
    errors: list[Exception] = []

    def round_trip_ok() -> bool:
        try:
            run_async(_round_trip)
        except Exception as exc:  # any failure means "not ready yet": retried until the deadline
            errors.append(exc)
            return False
        return True

    try:
        wait_ready(NAME, round_trip_ok, alive=is_running, log=_log(), timeout=timeout, interval=0.5)
    except ServiceError as exc:
        if not errors:
            raise
        raise ServiceError(NAME, f"no produce/consume round trip: {errors[-1]!r}", _log()) from exc
    return launched


def stop(kill: bool = False) -> None:
    """SIGTERM (controlled shutdown; SIGKILL after 60 s), or SIGKILL at once with ``kill``."""
    pid = next(iter(pids()), None)
    try:
        terminate(pid, kill=kill, timeout=60)
    except ServiceError as exc:
        raise ServiceError(NAME, str(exc), _log()) from exc


def _launch(lib: Path) -> None:
    ensure_ports_free(NAME, KAFKA_PORT, KAFKA_CONTROLLER_PORT, KAFKA_SASL_PORT)
    props = _dir() / "server.properties"
    props.write_text(_properties())
    java = [_java(), "-cp", f"{lib}/*"]
    if not (_dir() / "data" / "meta.properties").exists():
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        result = subprocess.run(
            [
                *java,
                "-Xmx256m",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(props),
                "--ignore-formatted",
            ],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if result.returncode != 0:
            raise ServiceError(NAME, f"formatting storage failed:\n{result.stdout}{result.stderr}")
    jvm = [
        *_HEAP,
        # A small test broker: the serial GC and C1-only JIT start ~1 s sooner on 2 cores.
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        "-Djava.awt.headless=true",
        "-Dorg.slf4j.simpleLogger.showDateTime=true",
        "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
        # Every client and server config is dumped at INFO: ~2,000 lines per start.
        "-Dorg.slf4j.simpleLogger.log.org.apache.kafka.common.config.AbstractConfig=warn",
    ]
    spawn_detached(
        [java[0], *jvm, *java[1:], "kafka.Kafka", str(props)],
        log=_log(),
        pid_file=_dir() / "kafka.pid",
        cwd=_dir(),
    )


def _api_versions(port: int, timeout: float = 2.0) -> bool:
    """Send ApiVersions v0 and check the reply's correlation id and error code."""
    client_id = b"opal-services"
    request = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            reply = b""
            while len(reply) < 10:
                chunk = sock.recv(10 - len(reply))
                if not chunk:
                    return False
                reply += chunk
    except OSError:
        return False
    _, correlation_id, error_code = struct.unpack(">iih", reply)
    return bool(correlation_id == 7 and error_code == 0)


async def _round_trip() -> None:
    """Produce one record and read it back (PLAINTEXT); log in over SASL/PLAIN."""
    from aiokafka import (  # type: ignore[import-untyped]
        AIOKafkaConsumer,
        AIOKafkaProducer,
        TopicPartition,
    )

    bootstrap = f"{HOST}:{KAFKA_PORT}"
    # Every client is stopped even when its start() failed (the broker is not ready yet: this is
    # retried), else it is garbage collected unclosed, with a ResourceWarning in a later test.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        await producer.start()
        meta = await producer.send_and_wait(_READY_TOPIC, b"ping")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=15000,
    )
    try:
        await consumer.start()
        partition = TopicPartition(_READY_TOPIC, meta.partition)
        consumer.assign([partition])
        consumer.seek(partition, meta.offset)
        records = await consumer.getmany(partition, timeout_ms=10000)
        if not records.get(partition):
            raise ServiceError(NAME, "produced a record but could not read it back")
    finally:
        await consumer.stop()
    sasl = AIOKafkaProducer(
        bootstrap_servers=f"{HOST}:{KAFKA_SASL_PORT}",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_plain_username=KAFKA_SASL_USER,
        sasl_plain_password=KAFKA_SASL_PASSWORD,
        request_timeout_ms=15000,
    )
    try:
        await sasl.start()
    finally:
        await sasl.stop()
