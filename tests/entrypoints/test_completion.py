"""``opsicle completion``: the scripts parse in their shell and complete commands and roles."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from entrypoints.main import run

ROLES = ["approver", "controller", "coordinator", "standalone", "worker"]


def script(shell: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert run(["completion", shell]) == 0
    path = tmp_path / f"opsicle.{shell}"
    path.write_text(capsys.readouterr().out)
    return path


def bash_complete(path: Path, *words: str) -> list[str]:
    """What bash offers for the last of ``words``, by calling the script's function as bash does."""
    quoted = " ".join(f"'{w}'" for w in ("opsicle", *words))
    driver = (
        f"source '{path}'\n"
        f"COMP_WORDS=({quoted}); COMP_CWORD={len(words)}\n"
        'COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}\n'
        "_opsicle opsicle \"${COMP_WORDS[COMP_CWORD]}\" \"${COMP_WORDS[COMP_CWORD-1]}\"\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", driver],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return sorted(line for line in result.stdout.splitlines() if line)


def test_bash_script_is_valid_and_completes_commands_and_roles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = script("bash", tmp_path, capsys)
    subprocess.run(["bash", "-n", str(path)], check=True, timeout=60)
    assert bash_complete(path, "st") == ["start"]
    assert bash_complete(path, "start", "") == ROLES
    assert bash_complete(path, "start", "co") == ["controller", "coordinator"]
    # Global options before the command do not hide it.
    assert bash_complete(path, "-o", "json", "start", "w") == ["worker"]
    assert bash_complete(path, "completion", "") == ["bash", "fish", "zsh"]
    assert "--token-id" in bash_complete(path, "start", "worker", "--to")


def test_zsh_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = script("zsh", tmp_path, capsys)
    text = path.read_text()
    assert text.startswith("#compdef opsicle")
    assert "standalone" in text
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed: the script was produced but not parsed")
    subprocess.run(["zsh", "-n", str(path)], check=True, timeout=60)


def test_fish_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = script("fish", tmp_path, capsys)
    assert "complete -c opsicle" in path.read_text()
    if shutil.which("fish") is None:
        pytest.skip("fish is not installed: the script was produced but not parsed")
    subprocess.run(["fish", "--no-config", "-n", str(path)], check=True, timeout=60)

    def offered(line: str) -> set[str]:
        result = subprocess.run(
            ["fish", "--no-config", "-c", f"source '{path}'; complete -C '{line}'"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return {row.split("\t")[0] for row in result.stdout.splitlines()}

    assert "start" in offered("opsicle st")
    assert set(ROLES) <= offered("opsicle start ")


def test_an_unknown_shell_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        run(["completion", "tcsh"])
    assert exit.value.code == 2
    assert 'Invalid value "tcsh" for SHELL' in capsys.readouterr().err
