"""The platform database over TLS: a private MariaDB server whose user requires SSL, its CA
and server certificate made here; verified connections work, the others fail in one line."""

from __future__ import annotations

import datetime
import getpass
import ipaddress
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from entrypoints.main import run
from tests.e2e.conftest import OPSICLE, Processes
from tests.support import free_port, port_open, require_service

pytestmark = pytest.mark.e2e
SBIN = os.pathsep.join((os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"))
USER, PASSWORD = "opsicle_tls", "tls-only-Passw0rd"


@attrs.frozen
class TlsMariaDB:
    url: str  # the TLS-only user on the server's own database
    ca: Path  # the CA that signed the server's certificate
    wrong_ca: Path  # a CA that did not


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(subject))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _make_ca(path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(f"Opsicle test CA {path.stem}", key, None, key)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _sql(socket_path: Path, statement: str) -> None:
    subprocess.run(
        ["mariadb", "--no-defaults", f"--socket={socket_path}", "-uroot", "-e", statement],
        check=True, capture_output=True, timeout=60,
    )


@pytest.fixture(scope="module")
def tls_mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsMariaDB]:
    """A private MariaDB server with TLS, its own datadir, port and socket, stopped by PID."""
    server = shutil.which("mariadbd", path=SBIN) or shutil.which("mysqld", path=SBIN)
    install = shutil.which("mariadb-install-db", path=SBIN)
    require_service("mariadbd", bool(server and install and shutil.which("mariadb")),
                    "the MariaDB server binaries are needed to run a private TLS server")
    assert server and install
    root = tmp_path_factory.mktemp("mariadb-tls")
    ca_cert, ca_key = _make_ca(root / "ca.pem")
    _make_ca(root / "wrong-ca.pem")
    server_key = ec.generate_private_key(ec.SECP256R1())
    (root / "server-key.pem").write_bytes(_key_pem(server_key))
    (root / "server-cert.pem").write_bytes(
        _certificate("127.0.0.1", server_key, ca_cert, ca_key).public_bytes(
            serialization.Encoding.PEM))
    data, sock, port = root / "data", root / "mysqld.sock", free_port()
    subprocess.run(
        [install, "--no-defaults", f"--datadir={data}", "--auth-root-authentication-method=normal",
         "--skip-test-db"],
        check=True, capture_output=True, timeout=120,
    )
    log = root / "mariadbd.log"
    proc = subprocess.Popen(
        [server, "--no-defaults", f"--user={getpass.getuser()}", f"--datadir={data}",
         f"--port={port}", "--bind-address=127.0.0.1", f"--socket={sock}",
         f"--pid-file={root / 'mariadbd.pid'}", f"--log-error={log}", "--skip-name-resolve",
         f"--ssl-ca={root / 'ca.pem'}", f"--ssl-cert={root / 'server-cert.pem'}",
         f"--ssl-key={root / 'server-key.pem'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (port_open("127.0.0.1", port) and sock.exists()):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        _sql(sock, f"CREATE DATABASE opsicle CHARACTER SET utf8mb4; "
                   f"CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}' REQUIRE SSL; "
                   f"GRANT ALL ON opsicle.* TO '{USER}'@'%'")
        yield TlsMariaDB(f"mysql+asyncmy://{USER}:{PASSWORD}@127.0.0.1:{port}/opsicle",
                         root / "ca.pem", root / "wrong-ca.pem")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _opsicle(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_verified_tls_migrates_checks_and_serves_a_role(
    tls_mariadb: TlsMariaDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("OPSICLE_DATABASE_URL", tls_mariadb.url)
    monkeypatch.setenv("OPSICLE_DATABASE_TLS_CA", str(tls_mariadb.ca))
    code, out, err = _opsicle("run", "migrations", capsys=capsys)
    assert code == 0, err
    assert "database schema: empty ->" in out
    code, out, err = _opsicle("utils", "check", "database", capsys=capsys)
    assert code == 0, err
    assert out.startswith("database: ok: MariaDB"), out
    # A role takes the same settings from the environment and serves on the TLS connection.
    port = free_port()
    roles = Processes(list(OPSICLE), tmp_path, {
        "OPSICLE_DATABASE_URL": tls_mariadb.url,
        "OPSICLE_DATABASE_TLS_CA": str(tls_mariadb.ca),
        "OPSICLE_DATABASE_POOL_SIZE": "2",
    })
    try:
        controller = roles.start("controller", "start", "controller", "--listen",
                                 f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "data"),
                                 "--database-max-overflow", "1")
        roles.wait_ready(f"http://127.0.0.1:{port}", controller)
    finally:
        roles.stop_all()


def test_without_tls_the_tls_only_user_is_refused_in_one_line(
    tls_mariadb: TlsMariaDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("OPSICLE_DATABASE_TLS_CA", raising=False)
    code, _, err = _opsicle("utils", "check", "database", "--database-url", tls_mariadb.url,
                            capsys=capsys)
    assert code == 5
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "authentication failed" in lines[0] and "requires TLS needs database-tls-ca" in err
    assert PASSWORD not in err


def test_a_server_certificate_from_another_ca_fails_verification_in_one_line(
    tls_mariadb: TlsMariaDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("OPSICLE_DATABASE_URL", tls_mariadb.url)
    monkeypatch.setenv("OPSICLE_DATABASE_TLS_CA", str(tls_mariadb.wrong_ca))
    code, _, err = _opsicle("utils", "check", "database", capsys=capsys)
    assert code == 5
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert ("TLS: the server's certificate did not verify (self-signed certificate in "
            "certificate chain); check the CA") in lines[0]
    # Without verification the same connection works: the server's certificate is not checked.
    monkeypatch.setenv("OPSICLE_DATABASE_TLS_VERIFY", "false")
    code, _, err = _opsicle("run", "migrations", capsys=capsys)
    assert code == 0, err

