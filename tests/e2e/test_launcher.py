"""The one-file wrapper (packaging/onefile.sh, packaging/launcher.sh) around a stand-in program.

The stand-in folder holds an ``opsicle`` shell script, so these tests need no PyInstaller
build: they check unpacking once per build, the cache location, the checksum, and concurrent
first starts. tests/e2e/test_executable.py runs the real dist/opsicle.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT

pytestmark = pytest.mark.e2e

HEADER = 8192
PROGRAM = '#!/bin/sh\necho "ran from ${0%/*}: $*"\n[ "$1" = fail ] && exit 7\nexit 0\n'


def wrap(tmp_path: Path, version: str = "9.9.9", mode: int = 0o755) -> tuple[Path, str]:
    """A one-file ``opsicle`` around a stand-in folder, and the name of its cache entry."""
    folder = tmp_path / "folder"
    (folder / "_internal").mkdir(parents=True)
    (folder / "opsicle").write_text(PROGRAM)
    (folder / "opsicle").chmod(mode)
    # Some bulk, so that unpacking takes long enough for concurrent starts to overlap.
    (folder / "_internal" / "bulk").write_bytes(os.urandom(4 * 1024 * 1024))
    onefile = tmp_path / "opsicle"
    made = subprocess.run(
        [str(ROOT / "packaging" / "onefile.sh"), str(folder), version, str(onefile)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return onefile, made.stdout.strip()


def start(
    onefile: Path, *args: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(onefile), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def cache_env(cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPSICLE_CACHE_DIR", "XDG_CACHE_HOME")}
    return {**env, "OPSICLE_CACHE_DIR": str(cache), **extra}


def damage(onefile: Path) -> None:
    data = bytearray(onefile.read_bytes())
    data[HEADER + 100] ^= 0xFF
    onefile.write_bytes(bytes(data))


def test_first_start_unpacks_once_and_later_starts_run_from_the_cache(tmp_path: Path) -> None:
    onefile, name = wrap(tmp_path)
    assert name.startswith("opsicle-9.9.9-")
    cache = tmp_path / "cache"
    first = start(onefile, "version", "two words", env=cache_env(cache))
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"ran from {cache / name}: version two words\n"
    entry = cache / name
    assert entry.is_symlink()
    assert sorted(p.name for p in cache.iterdir()) == sorted([name, os.readlink(entry)])
    # A later start does not read the payload again: a damaged one goes unnoticed.
    damage(onefile)
    again = start(onefile, "fail", env=cache_env(cache))
    assert again.returncode == 7  # the program's exit code comes through
    assert again.stdout == f"ran from {entry}: fail\n"
    assert len(list(cache.iterdir())) == 2


def test_a_damaged_file_is_refused_and_leaves_nothing_behind(tmp_path: Path) -> None:
    onefile, _ = wrap(tmp_path)
    damage(onefile)
    cache = tmp_path / "cache"
    result = start(onefile, "version", env=cache_env(cache))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"opsicle: {onefile} is damaged (its payload does not match its SHA-256): "
        "download it again\n"
    )
    assert list(cache.iterdir()) == []


def test_concurrent_first_starts_all_run_and_publish_one_copy(tmp_path: Path) -> None:
    onefile, name = wrap(tmp_path)
    cache = tmp_path / "cache"
    env = cache_env(cache)
    starts = [
        subprocess.Popen(
            [str(onefile), "n", str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        for i in range(8)
    ]
    for i, proc in enumerate(starts):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.decode() == f"ran from {cache / name}: n {i}\n"
    # One published link and the one folder it names; the other copies were removed.
    assert sorted(p.name for p in cache.iterdir()) == sorted([name, os.readlink(cache / name)])


def test_cache_location_follows_xdg_cache_home_then_home(tmp_path: Path) -> None:
    onefile, name = wrap(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("OPSICLE_CACHE_DIR", "XDG_CACHE_HOME")}
    xdg = start(onefile, env={**env, "XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert xdg.returncode == 0, xdg.stderr
    assert (tmp_path / "xdg" / "opsicle" / name / "opsicle").is_file()
    home = start(onefile, env={**env, "HOME": str(tmp_path / "home")})
    assert home.returncode == 0, home.stderr
    assert (tmp_path / "home" / ".cache" / "opsicle" / name / "opsicle").is_file()


def test_an_unusable_cache_directory_is_named(tmp_path: Path) -> None:
    onefile, _ = wrap(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = start(onefile, env=cache_env(blocker / "cache"))
    assert result.returncode == 1
    assert result.stderr == (
        f"opsicle: cannot unpack into {blocker / 'cache'}: "
        "set OPSICLE_CACHE_DIR to a writable directory\n"
    )


def test_a_deleted_cache_entry_is_unpacked_again(tmp_path: Path) -> None:
    onefile, name = wrap(tmp_path)
    cache = tmp_path / "cache"
    assert start(onefile, env=cache_env(cache)).returncode == 0
    target = cache / os.readlink(cache / name)
    shutil.rmtree(target)
    result = start(onefile, "back", env=cache_env(cache))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"ran from {cache / name}: back\n"
    assert (cache / name / "opsicle").is_file()


def test_each_build_has_its_own_cache_entry(tmp_path: Path) -> None:
    first, first_name = wrap(tmp_path / "a", version="1.0.0")
    second, second_name = wrap(tmp_path / "b", version="1.0.1")
    cache = tmp_path / "cache"
    assert start(first, env=cache_env(cache)).stdout == f"ran from {cache / first_name}: \n"
    assert start(second, env=cache_env(cache)).stdout == f"ran from {cache / second_name}: \n"
    assert first_name.startswith("opsicle-1.0.0-")
    assert second_name.startswith("opsicle-1.0.1-")


def test_a_version_with_slashes_and_sed_specials_makes_a_plain_cache_name(
    tmp_path: Path,
) -> None:
    onefile, name = wrap(tmp_path, version="1.0/rc 1&x\\y")
    assert name.startswith("opsicle-1.0_rc_1_x_y-")
    cache = tmp_path / "cache"
    result = start(onefile, "ok", env=cache_env(cache))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"ran from {cache / name}: ok\n"


def test_a_cache_where_programs_cannot_run_names_opsicle_cache_dir(tmp_path: Path) -> None:
    # Stands in for a noexec mount: the unpacked program exists but cannot be executed
    # (test -x is false for it, as it is on a noexec mount), for root too.
    onefile, name = wrap(tmp_path, mode=0o644)
    cache = tmp_path / "cache"
    for _ in range(2):  # every start says so, the first after unpacking
        result = start(onefile, env=cache_env(cache))
        assert result.returncode == 1
        assert result.stderr == (
            f"opsicle: cannot run {cache / name / 'opsicle'} (is {cache} mounted noexec?): "
            "set OPSICLE_CACHE_DIR to a directory where programs may run\n"
        )
        assert len(list(cache.iterdir())) == 2
