"""The platform database's pool and TLS settings: validated, applied to MySQL/MariaDB engines,
ignored for SQLite."""

from __future__ import annotations

import json
import re
import ssl
from pathlib import Path

import pytest
from sqlalchemy.pool import QueuePool

from adapters.sql.engine import create_engine
from domain.errors import Invalid
from entrypoints import settings
from entrypoints.database import database_options
from entrypoints.main import run

MYSQL = "mysql+asyncmy://opsicle:pw@127.0.0.1:3306/opsicle"


async def test_the_engine_has_the_configured_pool() -> None:
    resolved = settings.load(env={"OPSICLE_DATABASE_URL": MYSQL, "XDG_CONFIG_HOME": "/nonexistent",
                                  "OPSICLE_DATABASE_POOL_SIZE": "7"},
                             database_max_overflow="0")
    engine = create_engine(resolved.database_url, database_options(resolved))
    try:
        pool = engine.sync_engine.pool
        assert isinstance(pool, QueuePool)
        assert (pool.size(), pool._max_overflow) == (7, 0)
    finally:
        await engine.dispose()
    default = settings.load(env={"OPSICLE_DATABASE_URL": MYSQL, "XDG_CONFIG_HOME": "/nonexistent"})
    assert database_options(default).pool_size == 5
    assert database_options(default).tls is None


@pytest.mark.parametrize(("name", "value"), [("database-pool-size", "0"),
                                             ("database-pool-size", "many"),
                                             ("database-max-overflow", "-1"),
                                             ("database-pool-size", "2.5")])
def test_a_pool_setting_that_is_not_a_whole_number_in_range_is_refused(
    name: str, value: str
) -> None:
    with pytest.raises(Invalid) as raised:
        settings.load(env={settings.env_key(name): value, "XDG_CONFIG_HOME": "/nonexistent"})
    assert raised.value.message.startswith(f"environment {settings.env_key(name)}: {name} "
                                           f"'{value}' is not a whole number from")


def test_a_start_flag_is_validated_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    code = run(["start", "coordinator", "--data-dir", str(tmp_path), "--database-pool-size", "0"])
    assert code == 2
    assert ("flag --database-pool-size: database-pool-size '0' is not a whole number from 1 to "
            "1000") in capsys.readouterr().err


def test_sqlite_ignores_the_settings_and_config_show_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"database-pool-size: 3\ndatabase-tls-ca: {tmp_path / 'none.pem'}\n")
    monkeypatch.delenv("OPSICLE_DATABASE_URL", raising=False)
    monkeypatch.setenv("OPSICLE_DATA_DIR", str(tmp_path / "data"))
    assert run(["--config", str(config), "-o", "json", "config", "show"]) == 0
    rows = {r["setting"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["database-pool-size"]["value"] == 3
    assert rows["database-pool-size"]["from"] == (
        f"config file {config} (ignored: the database is SQLite)")
    assert rows["database-tls-verify"]["from"] == "default (ignored: the database is SQLite)"
    # A missing CA file is no error where it is not used.
    resolved = settings.load(config, env={"OPSICLE_DATA_DIR": str(tmp_path / "data")})
    assert database_options(resolved).tls is None
    monkeypatch.setenv("OPSICLE_DATABASE_URL", MYSQL)
    assert run(["--config", str(config), "-o", "json", "config", "show"]) == 0
    rows = {r["setting"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["database-pool-size"]["from"] == f"config file {config}"


def test_an_unreadable_tls_file_is_one_line_naming_the_setting_and_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("OPSICLE_DATABASE_URL", MYSQL)
    missing = tmp_path / "no-such-ca.pem"
    monkeypatch.setenv("OPSICLE_DATABASE_TLS_CA", str(missing))
    assert run(["run", "migrations"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: database-tls-ca: no readable file at {missing}"]
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    monkeypatch.setenv("OPSICLE_DATABASE_TLS_CA", str(not_pem))
    no_pem = rf"^database-tls-ca: {re.escape(str(not_pem))} holds no PEM certificate"
    with pytest.raises(Invalid, match=no_pem):
        database_options(settings.load())
    monkeypatch.setenv("OPSICLE_DATABASE_TLS_KEY", str(not_pem))
    with pytest.raises(Invalid, match=r"^database-tls-key: needs database-tls-cert"):
        database_options(settings.load())


def _env(url: str, ca: Path) -> dict[str, str]:
    return {"OPSICLE_DATABASE_URL": url, "OPSICLE_DATABASE_TLS_CA": str(ca),
            "XDG_CONFIG_HOME": str(ca.parent)}


def test_verification_can_be_turned_off(tmp_path: Path) -> None:
    from tests.e2e.test_tls import self_signed

    cert, key = self_signed(tmp_path)
    env = {**_env(MYSQL, cert), "OPSICLE_DATABASE_TLS_CERT": str(cert),
           "OPSICLE_DATABASE_TLS_KEY": str(key)}
    verified = database_options(settings.load(env=env)).tls
    assert verified is not None and verified.check_hostname
    assert verified.verify_mode == ssl.CERT_REQUIRED
    unverified = database_options(settings.load(env={**env, "OPSICLE_DATABASE_TLS_VERIFY": "no"}))
    assert unverified.tls is not None and unverified.tls.verify_mode == ssl.CERT_NONE
    assert not unverified.tls.check_hostname


def test_a_passphrase_protected_key_is_refused_without_prompting(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    from tests.e2e.test_tls import self_signed

    cert, key = self_signed(tmp_path)
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    key.write_bytes(private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase")))
    env = {**_env(MYSQL, cert), "OPSICLE_DATABASE_TLS_CERT": str(cert),
           "OPSICLE_DATABASE_TLS_KEY": str(key)}
    with pytest.raises(Invalid, match=r"^database-tls-cert: .* not a usable certificate"):
        database_options(settings.load(env=env))


def test_a_database_url_of_another_kind_is_refused_naming_what_is_supported() -> None:
    with pytest.raises(Invalid, match=r"^database-url: the scheme 'postgresql' is not supported"):
        create_engine("postgresql://opsicle@127.0.0.1/opsicle")
