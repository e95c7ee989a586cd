"""Contract of the approver's grant key ring store, in memory, on SQLite and on MariaDB, and
the ring every role reads from it (first key, rotation, import of older key files)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.crypto.grants import FileGrantKeyStore, GrantKey, StoredKeyRing, stored_key
from adapters.crypto.sealing import FernetSealer
from adapters.memory.grant_keys import InMemoryGrantKeyRepository
from adapters.sql.engine import create_engine
from adapters.sql.grant_keys import sql_grant_keys
from domain.errors import Invalid
from domain.grants import GrantRefused
from domain.ports import GrantKeyRepository
from tests.contract.builders import uid
from tests.unit.test_grants import T0, a_grant

SEALER = FernetSealer(os.urandom(32))
HOUR = timedelta(hours=1)
Processes = Callable[[], GrantKeyRepository]


@pytest.fixture
async def processes(
    store_backend: tuple[str, str | None],
) -> AsyncIterator[Processes]:
    """Makes the ring's store as another process sees it: its own engine on the same
    database (one shared list in memory), and one ring name per test."""
    _, url = store_backend
    memory = InMemoryGrantKeyRepository()
    ring = uid("ring")
    engines: list[AsyncEngine] = []

    def another() -> GrantKeyRepository:
        if url is None:
            return memory
        engines.append(create_engine(url))
        return sql_grant_keys(engines[-1], ring)

    try:
        yield another
    finally:
        for engine in engines:
            await engine.dispose()


def ring_of(repository: GrantKeyRepository, legacy: Path | None = None) -> StoredKeyRing:
    return StoredKeyRing(repository, SEALER, legacy_dir=legacy)


async def test_the_first_keys_are_stored_once_and_later_first_keys_are_ignored(
    processes: Processes,
) -> None:
    keys = processes()
    assert await keys.keys() == []
    first = stored_key(GrantKey.generate(T0), SEALER)
    assert await keys.add_first([first]) == [first]
    other = stored_key(GrantKey.generate(T0 + HOUR), SEALER)
    assert await keys.add_first([other]) == [first]
    assert await processes().keys() == [first]


async def test_processes_starting_at_once_on_an_empty_store_all_use_one_key(
    processes: Processes,
) -> None:
    rings = await asyncio.gather(*(ring_of(processes()).ring(T0) for _ in range(6)))
    assert len({r.key_id for r in rings}) == 1
    assert [k.key_id for k in await processes().keys()] == [rings[0].key_id]


async def test_rotating_retires_the_current_key_which_still_verifies_its_grants(
    processes: Processes,
) -> None:
    ring = ring_of(processes())
    first = await ring.ring(T0 - HOUR)
    old_grant = first.sign(a_grant())
    rotated = await ring.rotate(T0 + HOUR)
    assert rotated.key_id != first.key_id
    new_grant = rotated.sign(a_grant())
    assert new_grant.grant.key_id == rotated.key_id
    assert rotated.verify(old_grant).key_id == first.key_id
    stored = {k.key_id: k for k in await processes().keys()}
    assert stored[first.key_id].retired_at == T0 + HOUR
    assert stored[first.key_id].expires_at == T0 + HOUR + timedelta(hours=24)
    assert stored[rotated.key_id].retired_at is None


async def test_a_rotation_by_one_process_signs_the_next_grant_of_another(
    processes: Processes,
) -> None:
    signer, rotator = ring_of(processes()), ring_of(processes())
    before = await signer.ring(T0)
    rotated = await rotator.rotate(T0 + HOUR)
    after = await signer.ring(T0 + 2 * HOUR)
    assert after.key_id == rotated.key_id != before.key_id
    # What the signing process verifies with follows what it read last.
    signed = after.sign(a_grant())
    assert signer.verify(signed) == signed.grant


async def test_a_rotation_from_a_key_that_is_no_longer_current_changes_nothing(
    processes: Processes,
) -> None:
    keys = processes()
    assert await keys.rotate(
        "none", stored_key(GrantKey.generate(T0), SEALER), at=T0, expires_at=T0 + HOUR
    ) is None
    assert await keys.keys() == []
    first = stored_key(GrantKey.generate(T0), SEALER)
    await keys.add_first([first])
    second = stored_key(GrantKey.generate(T0 + HOUR), SEALER)
    after = await keys.rotate(first.key_id, second, at=T0 + HOUR, expires_at=T0 + 2 * HOUR)
    assert after is not None and [k.key_id for k in after] == [first.key_id, second.key_id]
    stale = stored_key(GrantKey.generate(T0 + HOUR), SEALER)
    assert await keys.rotate(
        first.key_id, stale, at=T0 + HOUR, expires_at=T0 + 2 * HOUR
    ) is None
    assert [k.key_id for k in await keys.keys()] == [first.key_id, second.key_id]


async def test_rotations_at_once_each_add_a_key_and_leave_one_current(
    processes: Processes,
) -> None:
    first = await ring_of(processes()).ring(T0)
    rotated = await asyncio.gather(*(ring_of(processes()).rotate(T0 + HOUR) for _ in range(3)))
    stored = await processes().keys()
    assert len(stored) == 4
    [current] = [k for k in stored if k.retired_at is None]
    assert current.key_id in {r.key_id for r in rotated}
    assert first.key_id in {k.key_id for k in stored if k.retired_at is not None}


async def test_keys_retired_longer_than_a_grant_lives_are_dropped_on_rotation(
    processes: Processes,
) -> None:
    ring = ring_of(processes())
    first = await ring.ring(T0)
    second = await ring.rotate(T0 + HOUR)
    third = await ring.rotate(T0 + HOUR + timedelta(hours=24))
    assert [k.key_id for k in await processes().keys()] == [second.key_id, third.key_id]
    with pytest.raises(GrantRefused, match="unknown key"):
        third.verify(first.sign(a_grant()))


async def test_private_keys_are_stored_sealed_with_the_server_key(processes: Processes) -> None:
    ring = await ring_of(processes()).ring(T0)
    [stored] = await processes().keys()
    assert stored.sealed_private and SEALER.open(stored.sealed_private)
    assert ring.current.private is not None
    with pytest.raises(Invalid, match="sealed with another secret key") as caught:
        await StoredKeyRing(processes(), FernetSealer(os.urandom(32))).ring(T0)
    assert caught.value.code == "secret_key_mismatch" and "OPSICLE_SECRET_KEY" in str(caught.value)


async def test_key_files_of_an_older_release_are_imported_once_and_left_alone(
    processes: Processes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = FileGrantKeyStore(tmp_path / "approver-keys", SEALER)
    pinned = files.ring(T0 - HOUR)  # what workers pinned from the files
    old_grant = pinned.sign(a_grant())
    rotated = files.rotate(T0)
    before = {p.name: p.read_bytes() for p in (tmp_path / "approver-keys").iterdir()}

    with caplog.at_level(logging.INFO, logger="opsicle.approver_keys"):
        ring = await ring_of(processes(), tmp_path / "approver-keys").ring(T0 + HOUR)
    assert ring.key_id == rotated.key_id
    assert ring.verify(old_grant).key_id == pinned.key_id
    assert {k.key_id for k in await processes().keys()} == {pinned.key_id, rotated.key_id}
    assert "imported 2 approver key(s)" in caplog.text and "left as they were" in caplog.text
    assert {p.name: p.read_bytes() for p in (tmp_path / "approver-keys").iterdir()} == before

    # The store has keys now: the files are not read again, even when they change.
    caplog.clear()
    files.rotate(T0 + 2 * HOUR)
    with caplog.at_level(logging.INFO, logger="opsicle.approver_keys"):
        again = await ring_of(processes(), tmp_path / "approver-keys").ring(T0 + 2 * HOUR)
    assert again.key_id == rotated.key_id and "imported" not in caplog.text


async def test_without_key_files_the_first_start_generates_a_key(
    processes: Processes, tmp_path: Path
) -> None:
    ring = await ring_of(processes(), tmp_path / "approver-keys").ring(T0)
    assert [k.key_id for k in await processes().keys()] == [ring.key_id]
    assert not (tmp_path / "approver-keys").exists()
