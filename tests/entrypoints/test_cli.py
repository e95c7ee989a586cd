"""The CLI in-process: validate, explain, version, global options and their precedence."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from domain.errors import Invalid
from entrypoints import settings
from entrypoints.main import run
from entrypoints.version import VERSION

EXAMPLES = Path(__file__).parents[2] / "examples"


def test_version_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["version", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == VERSION


def test_version_matches_the_package_metadata() -> None:
    text = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert f'version = "{VERSION}"' in text


def test_every_example_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(str(p) for p in EXAMPLES.glob("*.yaml"))
    assert len(files) >= 5
    assert run(["validate", *files]) == 0
    assert capsys.readouterr().out.count("is valid") == len(files)


def test_validate_stops_at_the_first_invalid_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: v1\ntype: Automation\nmetadata: {name: x}\n"
        "spec:\n  phases:\n    - name: a\n      image: b\n      commands: [c]\n"
        "      timeout: -1\n"
    )
    good = EXAMPLES / "hello.yaml"
    assert run(["validate", str(good), str(bad), str(good)]) == 2
    captured = capsys.readouterr()
    assert captured.out.count("is valid") == 1
    assert (
        f"{bad}:9:7: spec.phases[0].timeout: expected a number from 1 to 604800, got -1"
        in captured.err
    )


def test_validate_a_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["validate", "/nonexistent/x.yaml"]) == 2
    assert "/nonexistent/x.yaml: no such file" in capsys.readouterr().err


def test_explain_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["explain", "exitcode", "4"]) == 0
    assert "timed out" in capsys.readouterr().out
    assert run(["explain", "exitcode", "--all", "-o", "json"]) == 0
    codes = {row["code"] for row in json.loads(capsys.readouterr().out)}
    assert {0, 2, 3, 4, 130} <= codes
    assert run(["explain", "exitcode", "77"]) == 2
    assert "77 is not an exit code" in capsys.readouterr().err


def test_run_refuses_a_resource_that_cannot_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "apiVersion: v1\ntype: ApprovalPolicy\nmetadata: {name: p}\n"
        "spec: {telegram: {chatIds: [1]}}\n"
    )
    assert run(["run", str(policy)]) == 2
    assert (
        "type: expected Automation or AutomationTemplate here, got ApprovalPolicy"
        in capsys.readouterr().err
    )


def test_bad_var_syntax_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["run", str(EXAMPLES / "hello.yaml"), "--var", "who"]) == 2
    assert "expected key=value, got 'who'" in capsys.readouterr().err


def test_settings_precedence_flag_env_file_default(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("output: yaml\nlog-level: debug\nrunner: docker\n")
    env = {"OPSICLE_OUTPUT": "json", "OPSICLE_RUNNER": "process"}
    resolved = settings.load(config, env, runner="auto")
    assert resolved["runner"] == "auto" and resolved.origin("runner") == "flag --runner"
    assert (
        resolved["output"] == "json" and resolved.origin("output") == "environment OPSICLE_OUTPUT"
    )
    assert resolved["log-level"] == "debug" and resolved.origin("log-level").startswith(
        "config file"
    )
    assert resolved["listen"] == "127.0.0.1:13371" and resolved.origin("listen") == "default"


def test_settings_errors_name_the_source(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("outptu: json\n")
    with pytest.raises(Invalid, match="outptu: unknown setting"):
        settings.load(config, {})
    with pytest.raises(Invalid, match="environment OPSICLE_OUTPUT"):
        settings.load(None, {"OPSICLE_OUTPUT": "xml", "XDG_CONFIG_HOME": str(tmp_path)})


def test_config_file_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("output: json\n")
    assert run(["--config", str(config), "version"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == VERSION
    assert run(["--config", str(tmp_path / "missing.yaml"), "version"]) == 2


HEAVY = (
    "sqlalchemy",
    "alembic",
    "aiosqlite",
    "asyncmy",
    "pymongo",
    "redis",
    "nats",
    "aiodocker",
    "starlette",
    "hypercorn",
    "argon2",
    "cryptography",
    "httpx",
)
# Plain output needs none of these either: `opsicle version` prints one line or one document.
PLAIN = ("rich", "yaml", "cattrs", "asyncio")


def modules_loaded_by(args: list[str]) -> set[str]:
    """The top-level packages a fresh interpreter has imported after running ``opsicle ARGS``."""
    probe = (
        "import contextlib, io, sys\n"
        "from entrypoints.main import run\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        code = run({args!r})\n"
        "    except SystemExit as exit:\n"
        "        code = exit.code\n"
        "assert code == 0, code\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return set(result.stdout.split())


@pytest.mark.parametrize(
    "args", [["--help"], ["version"], ["run", "--help"], ["start", "--help"], ["list", "--help"]]
)
def test_help_and_version_do_not_load_the_server_stacks(args: list[str]) -> None:
    loaded = modules_loaded_by(args)
    assert "cyclopts" in loaded  # the probe did run the command tree
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.parametrize("args", [["version"], ["version", "-o", "json"]])
def test_version_output_is_plain(args: list[str]) -> None:
    loaded = modules_loaded_by(args)
    assert loaded.isdisjoint(HEAVY + PLAIN), sorted(loaded & set(HEAVY + PLAIN))


def test_standalone_takes_its_embedded_workers_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    served: dict[str, settings.Settings] = {}

    async def serve_role(role: str, resolved: settings.Settings) -> int:
        served[role] = resolved
        return 0

    monkeypatch.setattr("entrypoints.serve.serve_role", serve_role)
    flags = ["--lease-seconds", "90", "--concurrency", "3", "--runner", "process",
             "--drain-seconds", "5", "--docker-host", "unix:///run/elsewhere.sock"]  # fmt: skip
    assert run(["start", "standalone", "--data-dir", str(tmp_path), *flags]) == 0
    resolved = served["standalone"]
    names = ("lease-seconds", "concurrency", "runner", "drain-seconds", "docker-host")
    assert [resolved[name] for name in names] == [
        90.0, 3, "process", 5.0, "unix:///run/elsewhere.sock"
    ]
    assert {resolved.origin(name) for name in names} == {f"flag --{name}" for name in names}
