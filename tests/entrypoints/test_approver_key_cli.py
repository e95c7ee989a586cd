"""``opsicle get|rotate approver-key`` and the worker's pinned ``--approver-key`` files."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.crypto.grants import Ed25519GrantVerifier
from domain.errors import Invalid
from entrypoints import bootstrap, settings
from entrypoints.worker import pinned_verifier
from tests.contract.conftest import mariadb_url, run_aside, sqlite_url
from tests.entrypoints.conftest import CliRunner

__all__ = ["mariadb_url", "sqlite_url"]  # the contract suites' migrated databases


def test_get_approver_key_prints_a_pem_key_made_on_first_use(
    cli: CliRunner, tmp_path: Path
) -> None:
    first = cli("get", "approver-key", "--data-dir", str(tmp_path))
    assert first.code == 0, first.err
    assert "-----BEGIN PUBLIC KEY-----" in first.out
    assert "(current)" in first.out
    again = cli("get", "approver-key", "--data-dir", str(tmp_path))
    assert again.out == first.out
    # The ring lives in the platform database, not in key files.
    assert (tmp_path / "opsicle.db").exists() and not (tmp_path / "approver-keys").exists()


def test_rotate_approver_key_adds_a_current_key_and_keeps_the_old_one(
    cli: CliRunner, tmp_path: Path
) -> None:
    before = cli("-o", "json", "get", "approver-key", "--data-dir", str(tmp_path))
    rotated = cli("-o", "json", "rotate", "approver-key", "--data-dir", str(tmp_path))
    assert rotated.code == 0, rotated.err
    old = json.loads(before.out)
    keys = json.loads(rotated.out)
    assert len(keys) == 2
    assert [k["current"] for k in keys] == [False, True]
    assert keys[0]["keyId"] == old[0]["keyId"] and keys[0]["retiredAt"]


def test_the_worker_pins_the_printed_keys(cli: CliRunner, tmp_path: Path) -> None:
    pem = cli("-o", "json", "get", "approver-key", "--data-dir", str(tmp_path / "d"))
    key = json.loads(pem.out)[0]
    path = tmp_path / "approver.pem"
    path.write_text(key["publicKey"])
    verifier = pinned_verifier([str(path)])
    assert isinstance(verifier, Ed25519GrantVerifier)
    assert verifier.key_ids == (key["keyId"],)
    assert pinned_verifier(None) is None
    path.write_text("not a key")
    with pytest.raises(Invalid):
        pinned_verifier(str(path))
    with pytest.raises(Invalid, match="cannot be read"):
        pinned_verifier(str(tmp_path / "missing.pem"))


def test_the_worker_pins_every_key_of_the_printed_text(cli: CliRunner, tmp_path: Path) -> None:
    data = str(tmp_path / "d")
    cli("get", "approver-key", "--data-dir", data)
    printed = cli("rotate", "approver-key", "--data-dir", data)
    assert printed.out.count("# key ") == 2
    path = tmp_path / "approver.pem"
    path.write_text(printed.out)  # opsicle rotate approver-key > approver.pem
    keys = json.loads(cli("-o", "json", "get", "approver-key", "--data-dir", data).out)
    verifier = pinned_verifier(str(path))
    assert isinstance(verifier, Ed25519GrantVerifier)
    assert sorted(verifier.key_ids) == sorted(k["keyId"] for k in keys)


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def database_url(request: pytest.FixtureRequest) -> str:
    """A migrated database of the session (SQLite file or MariaDB) that several data
    directories, as on several machines, point at."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


def test_servers_on_several_machines_share_one_ring_that_the_cli_rotates(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    monkeypatch.setenv("OPSICLE_SECRET_KEY", "s" * 40)
    monkeypatch.setenv("OPSICLE_DATABASE_URL", database_url)

    async def current_key(machine: str) -> str:
        resolved = settings.load(None, dict(os.environ), data_dir=str(tmp_path / machine))
        async with bootstrap.approver_keys(resolved) as keys:
            return (await keys.ring(datetime.now(UTC))).key_id

    first = run_aside(current_key("one"))
    assert run_aside(current_key("two")) == first
    shown = json.loads(cli("-o", "json", "get", "approver-key", "--data-dir", str(tmp_path)).out)
    assert [k["keyId"] for k in shown if k["current"]] == [first]

    rotated = cli("-o", "json", "rotate", "approver-key", "--database-url", database_url,
                  "--data-dir", str(tmp_path / "three"))
    assert rotated.code == 0, rotated.err
    [new] = [k["keyId"] for k in json.loads(rotated.out) if k["current"]]
    assert new != first
    assert run_aside(current_key("one")) == run_aside(current_key("two")) == new
    assert not list(tmp_path.glob("*/approver-keys"))
