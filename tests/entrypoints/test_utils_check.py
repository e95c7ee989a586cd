"""``opsicle utils check``: the stores the settings name, checked against the real services
(MariaDB, Redis, NATS JetStream, and the MongoDB stand-in nx-27017) and against ports where
nothing answers."""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from entrypoints.main import run
from tests.contract.conftest import MARIADB_SERVER, _execute, mariadb_url, run_aside  # noqa: F401
from tests.contract.mongo_fixture import mongo_url  # noqa: F401 (a fixture)
from tests.support import port_open, require_service

SECRET = "s3cret-pw"


@pytest.fixture(autouse=True)
def own_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in ("DATABASE_URL", "REDIS_URL", "MONGO_URL", "NATS_URL", "MIGRATE", "OUTPUT"):
        monkeypatch.delenv(f"OPSICLE_{name}", raising=False)


def closed_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


@pytest.fixture
def empty_mariadb() -> Iterator[str]:
    """A MariaDB database nothing was migrated on."""
    require_service("MariaDB", port_open("127.0.0.1", 3306))
    name = f"opsicle_check_{secrets.token_hex(4)}"
    run_aside(_execute(f"{MARIADB_SERVER}/", f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
    try:
        yield f"{MARIADB_SERVER}/{name}"
    finally:
        run_aside(_execute(f"{MARIADB_SERVER}/", f"DROP DATABASE IF EXISTS {name}"))


def check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, object]],
                                                                     str]:
    code = run(["utils", "check", *args, "-o", "json"])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def test_the_embedded_default_is_fine_before_and_after_the_first_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "data")
    code, reports, err = check(capsys, "--data-dir", data)
    assert code == 0, err
    assert [r["store"] for r in reports] == ["database", "audit-database", "cache", "queue"]
    assert all(r["ok"] for r in reports)
    database = reports[0]
    assert database["backend"] == "SQLite" and database["version"]
    assert "schema empty" in str(database["detail"])
    assert not (tmp_path / "data" / "opsicle.db").exists(), "checking must not create it"
    assert reports[2]["backend"] == "in-process"

    assert run(["run", "migrations", "--data-dir", data]) == 0
    capsys.readouterr()
    code, reports, _ = check(capsys, "database", "--data-dir", data)
    assert code == 0
    assert reports[0]["detail"].startswith("schema at the head")  # type: ignore[union-attr]


def test_every_real_store_reports_its_version_round_trip_and_schema(
    mariadb_url: str,  # noqa: F811
    mongo_url: str,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    require_service("Redis", port_open("127.0.0.1", 6379))
    require_service("NATS", port_open("127.0.0.1", 4222))
    code, reports, err = check(
        capsys,
        "--data-dir", str(tmp_path),
        "--database-url", mariadb_url,
        "--mongo-url", mongo_url,
        "--redis-url", "redis://127.0.0.1:6379/0",
        "--nats-url", "nats://127.0.0.1:4222",
    )
    assert code == 0, err
    by_store = {r["store"]: r for r in reports}
    assert by_store["database"]["backend"] in ("MariaDB", "MySQL")
    assert str(by_store["database"]["detail"]).startswith("schema at the head")
    assert by_store["audit-database"]["backend"] == "MongoDB"
    assert by_store["cache"]["backend"] == "Redis"
    assert by_store["queue"]["backend"] == "NATS"
    assert by_store["queue"]["detail"] == "jetstream enabled"
    for report in reports:
        assert report["ok"] and report["version"], report
        assert isinstance(report["rtt_ms"], float) and report["rtt_ms"] >= 0


def test_one_store_can_be_checked_alone_and_text_output_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_service("Redis", port_open("127.0.0.1", 6379))
    code = run(["utils", "check", "cache", "--redis-url", "redis://127.0.0.1:6379/0"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("cache: ok: Redis ") and "redis://127.0.0.1:6379/0" in out
    assert "database" not in out


def test_unreachable_stores_fail_with_one_line_each_and_no_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ports = {name: closed_port() for name in ("database", "mongo", "redis", "nats")}
    code, reports, err = check(
        capsys,
        "--data-dir", str(tmp_path),
        "--database-url", f"mysql+asyncmy://opsicle:{SECRET}@127.0.0.1:{ports['database']}/x",
        "--mongo-url", f"mongodb://audit:{SECRET}@127.0.0.1:{ports['mongo']}/",
        "--redis-url", f"redis://:{SECRET}@127.0.0.1:{ports['redis']}/0",
        "--nats-url", f"nats://{SECRET}@127.0.0.1:{ports['nats']}",
        "--timeout", "3",
    )
    assert code == 5
    assert not any(r["ok"] for r in reports)
    lines = err.strip().splitlines()
    assert [line.split()[1] for line in lines] == [
        "database", "audit-database", "cache", "queue"
    ]
    for line, port in zip(lines, ports.values(), strict=True):
        assert f"127.0.0.1:{port}" in line and "connection refused" in line, line
    assert SECRET not in err and "Traceback" not in err
    assert "opsicle:***@" in lines[0] and "nats://***@" in lines[3]


def test_a_store_that_never_answers_is_reported_as_a_timeout(
    silent_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = check(
        capsys, "cache", "--redis-url", f"redis://127.0.0.1:{silent_port}/0", "--timeout", "1"
    )
    assert code == 5
    assert err.strip() == (
        f"error: cache at redis://127.0.0.1:{silent_port}/0: no answer (timeout)"
    )


def test_a_configured_database_behind_the_head_fails_the_check(
    empty_mariadb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, reports, err = check(capsys, "database", "--database-url", empty_mariadb)
    assert code == 5
    assert reports[0]["backend"] == "MariaDB" or reports[0]["backend"] == "MySQL"
    assert "opsicle run migrations" in err and "--migrate" in err
    assert len(err.strip().splitlines()) == 1


def test_a_database_file_that_cannot_be_created_under_a_file_fails_the_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    data = blocker / "data"
    code, reports, err = check(capsys, "database", "--data-dir", str(data))
    assert code == 5
    assert reports[0]["ok"] is False
    assert err.strip() == (
        f"error: database at sqlite:///{data / 'opsicle.db'}: "
        f"{data / 'opsicle.db'} cannot be created: {blocker} is not a directory"
    )


def test_a_database_file_in_a_read_only_directory_fails_the_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root, which writes into a mode 0555 directory anyway")
        code, reports, err = check(capsys, "--data-dir", str(locked / "data"))
    finally:
        locked.chmod(0o755)
    assert code == 5
    assert [r["ok"] for r in reports] == [False, False, True, False]  # the cache is in-process
    assert err.strip().splitlines()[0] == (
        f"error: database at sqlite:///{locked / 'data' / 'opsicle.db'}: "
        f"{locked / 'data' / 'opsicle.db'} cannot be created: the directory {locked} is not "
        "writable"
    )
