"""Throwaway TLS material for a test's own redis-server: a CA, a server certificate for
127.0.0.1 and localhost, a client certificate, all signed by that CA (openssl's command
line: the `cryptography` package is not a dependency here)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True)


def _signed(directory: Path, name: str, ca: str, extensions: str) -> None:
    """`name`.crt and `name`.key, signed by `ca`.crt/.key, with these v3 extensions."""
    (directory / f"{name}.ext").write_text(extensions)
    _openssl("req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
             cwd=directory)  # fmt: skip
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
             cwd=directory)  # fmt: skip


def make_ca(directory: Path, name: str) -> Path:
    """A self-signed CA (`name`.crt and `name`.key in `directory`); its certificate's path."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-keyout", f"{name}.key", "-out", f"{name}.crt",
             "-days", "2", "-subj", f"/CN={name}", cwd=directory)  # fmt: skip
    return directory / f"{name}.crt"


def make_certificates(directory: Path) -> Certificates:
    if shutil.which("openssl") is None:
        raise AssertionError("these tests need the openssl command line")
    ca = make_ca(directory, "qgw-test-ca")
    _signed(directory, "server", "qgw-test-ca", "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _signed(directory, "client", "qgw-test-ca", "extendedKeyUsage=clientAuth\n")
    return Certificates(
        ca=ca,
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )
