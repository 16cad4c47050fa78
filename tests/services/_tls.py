"""A throw-away test CA, a server certificate for localhost/127.0.0.1, and a client certificate.

Made once with the ``openssl`` command line in ``<state dir>/tls`` (EC P-256 keys, valid ten
years). The extensions are spelled out so strict verifiers (Python 3.13's ``VERIFY_X509_STRICT``)
accept them.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ._state import PG_CERT_USER, ServiceError, state_dir

__all__ = ["CertPaths", "cert_paths", "ensure_certs"]

_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""
_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
_DAYS = ["-days", "3650"]


@dataclass(frozen=True)
class CertPaths:
    """Files of the test PKI. ``client_cert`` has CN ``opal_cert`` (the Postgres cert-auth role)."""

    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def cert_paths() -> CertPaths:
    """Where the certificates are (or will be, after :func:`ensure_certs`)."""
    tls = state_dir() / "tls"
    return CertPaths(
        ca_file=tls / "ca.pem",
        server_cert=tls / "server.pem",
        server_key=tls / "server.key",
        client_cert=tls / "client.pem",
        client_key=tls / "client.key",
    )


def ensure_certs() -> CertPaths:
    """Create the CA and both certificates unless they all exist; return their paths."""
    paths = cert_paths()
    if all(path.exists() for path in vars(paths).values()):
        return paths
    final = paths.ca_file.parent
    work = final.with_name(f"tls.tmp-{secrets.token_hex(4)}")
    work.mkdir(mode=0o755)
    try:
        _make(work)
        shutil.rmtree(final, ignore_errors=True)
        work.rename(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return paths


def _make(work: Path) -> None:
    """Write ca.pem/ca.key, server.pem/server.key and client.pem/client.key into ``work``."""
    cnf = work / "openssl.cnf"
    cnf.write_text(_CONFIG)
    cfg = ["-config", str(cnf)]
    _openssl(
        work,
        "req",
        "-x509",
        *cfg,
        "-extensions",
        "ca_ext",
        *_KEY,
        *_DAYS,
        "-subj",
        "/CN=opal-broadcast test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    )
    for stem, subject, ext in (
        ("server", "/CN=localhost", "server_ext"),
        ("client", f"/CN={PG_CERT_USER}", "client_ext"),
    ):
        _openssl(
            work,
            "req",
            "-new",
            *cfg,
            *_KEY,
            "-subj",
            subject,
            "-keyout",
            f"{stem}.key",
            "-out",
            f"{stem}.csr",
        )
        _openssl(
            work,
            "x509",
            "-req",
            "-in",
            f"{stem}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            str(secrets.randbits(63)),
            *_DAYS,
            "-extfile",
            str(cnf),
            "-extensions",
            ext,
            "-out",
            f"{stem}.pem",
        )
    for key in work.glob("*.key"):
        key.chmod(0o600)


def _openssl(cwd: Path, *args: str) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ServiceError("tls", f"openssl {args[0]} failed:\n{result.stderr.strip()}")
