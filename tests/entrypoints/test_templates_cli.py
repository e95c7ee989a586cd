"""The template commands against a real controller process, one test per command."""

from __future__ import annotations

from pathlib import Path

import pytest

from entrypoints.exitcodes import ExitCode
from tests.entrypoints.conftest import CliRunner, RunningController
from tests.entrypoints.test_orgs_cli import data, last_code, new_org, ok, signup, unique
from tests.services.template_support import simple_text


@pytest.fixture(autouse=True)
def wide_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables as wide as their rows, so cells are not wrapped in what the tests read."""
    monkeypatch.setenv("COLUMNS", "250")


def template_file(tmp_path: Path, name: str, echo: str = "hello") -> Path:
    path = tmp_path / f"{name}-{echo}.yaml"
    path.write_text(simple_text(name, echo=echo))
    return path


def test_create_template(
    cli: CliRunner, controller_process: RunningController, tmp_path: Path
) -> None:
    signup(cli, controller_process, "tpl-a")
    name = unique("web")
    first = ok(cli("create", "template", "-f", str(template_file(tmp_path, name)), user="tpl-a"))
    assert f"created template {name}" in first.out
    second = data(
        cli("create", "template", "-f", str(template_file(tmp_path, name, "two")), "-o", "json")
    )
    assert second["version"] == 2 and second["template"]["defaultVersion"] == 1
    code = new_org(cli, "tpl-a")
    in_org = data(
        cli(
            "create",
            "template",
            "-f",
            str(template_file(tmp_path, name)),
            "--org",
            code,
            "-o",
            "json",
        )
    )
    assert in_org["template"]["orgId"] and in_org["version"] == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(simple_text("bad").replace("image: busybox:latest", "image: ''"))
    refused = cli("create", "template", "-f", str(bad))
    assert refused.code == ExitCode.INVALID
    assert f"{bad}:12:9: spec.template.phases[0].image" in refused.err
    # A file larger than a template may be is refused here, by its name.
    large = tmp_path / "large.yaml"
    large.write_text(simple_text("large") + "#" * (1 << 20) + "\n")
    too_large = cli("create", "template", "-f", str(large))
    assert too_large.code == ExitCode.INVALID
    assert f"{large} is too large" in too_large.err and "at most 524288 bytes" in too_large.err


def test_list_templates(
    cli: CliRunner, controller_process: RunningController, tmp_path: Path
) -> None:
    signup(cli, controller_process, "tpl-b")
    name = unique("lst")
    ok(cli("create", "template", "-f", str(template_file(tmp_path, name))))
    listed = ok(cli("list", "templates"))
    assert name in listed.out and "(personal)" in listed.out
    code = new_org(cli, "tpl-b")
    assert data(cli("list", "templates", "--org", code, "-o", "json")) == []


def test_get_template(
    cli: CliRunner, controller_process: RunningController, tmp_path: Path
) -> None:
    signup(cli, controller_process, "tpl-c")
    name = unique("get")
    ok(cli("create", "template", "-f", str(template_file(tmp_path, name, "one"))))
    ok(cli("create", "template", "-f", str(template_file(tmp_path, name, "two"))))
    shown = ok(cli("get", "template", name))
    assert 'echo "one $WHO"' in shown.out
    v2 = data(cli("get", "template", name, "--version", "2", "-o", "json"))
    assert v2["content"] == simple_text(name, echo="two")
    missing = cli("get", "template", "no-such-template")
    assert missing.code == ExitCode.NOT_FOUND


def test_list_template_versions(
    cli: CliRunner, controller_process: RunningController, tmp_path: Path
) -> None:
    signup(cli, controller_process, "tpl-d")
    name = unique("ver")
    for echo in ("one", "two", "three"):
        ok(cli("create", "template", "-f", str(template_file(tmp_path, name, echo))))
    versions = data(cli("list", "template", "versions", name, "-o", "json"))
    assert [(v["version"], v["isDefault"]) for v in versions] == [(1, True), (2, False), (3, False)]


def test_update_template_version(
    cli: CliRunner, controller_process: RunningController, tmp_path: Path
) -> None:
    signup(cli, controller_process, "tpl-e")
    name = unique("upd")
    ok(cli("create", "template", "-f", str(template_file(tmp_path, name, "one"))))
    ok(cli("create", "template", "-f", str(template_file(tmp_path, name, "two"))))
    changed = ok(cli("update", "template", "version", name, "--version", "2"))
    assert "now runs version 2" in changed.out
    assert data(cli("get", "template", name, "-o", "json"))["version"] == 2
    assert cli("update", "template", "version", name, "--version", "5").code == (ExitCode.NOT_FOUND)


def test_remove_template(
    cli: CliRunner, controller_process: RunningController, tmp_path: Path
) -> None:
    signup(cli, controller_process, "tpl-f")
    name = unique("rm")
    ok(cli("create", "template", "-f", str(template_file(tmp_path, name))))
    assert "deleted template" in ok(cli("remove", "template", name)).out
    assert cli("get", "template", name).code == ExitCode.NOT_FOUND


def shared(
    cli: CliRunner, controller: RunningController, tmp_path: Path, rights: str
) -> tuple[str, str, str]:
    """'owner' shares a new template with 'guest' who joins; both emails and its name."""
    owner = signup(cli, controller, "owner")
    guest = signup(cli, controller, "guest")
    name = unique("shr")
    ok(cli("create", "template", "-f", str(template_file(tmp_path, name)), user="owner"))
    ok(cli("create", "template", "user", name, "--email", guest, "--rights", rights, user="owner"))
    code = last_code(controller, guest, r"join code: (\S+)")
    ok(cli("join", "template", "--code", code, user="guest"))
    return owner, guest, name


def test_create_template_user(
    cli: CliRunner, controller_process: RunningController, tmp_path: Path
) -> None:
    _owner, guest, name = shared(cli, controller_process, tmp_path, "view,execute")
    sent = data(
        cli(
            "create",
            "template",
            "user",
            name,
            "--email",
            "x-" + guest,
            "--rights",
            "view",
            "--rights",
            "invite",
            "-o",
            "json",
            user="owner",
        )
    )
    assert sent["rights"] == ["view", "invite"] and sent["status"] == "pending"
    refused = cli(
        "create",
        "template",
        "user",
        name,
        "--email",
        "y-" + guest,
        "--rights",
        "view",
        user="guest",
    )
    assert refused.code == ExitCode.FORBIDDEN


def test_join_template(
    cli: CliRunner, controller_process: RunningController, tmp_path: Path
) -> None:
    _, _guest, name = shared(cli, controller_process, tmp_path, "view")
    assert name in ok(cli("list", "templates", user="guest")).out
    again = cli("join", "template", "--code", "tjoin-not-a-code", user="guest")
    assert again.code == ExitCode.NOT_FOUND
    assert cli("join", "template", user="guest", stdin="").code == ExitCode.INVALID


def test_list_template_users(
    cli: CliRunner, controller_process: RunningController, tmp_path: Path
) -> None:
    owner, guest, name = shared(cli, controller_process, tmp_path, "view")
    users = data(cli("list", "template", "users", name, "-o", "json", user="guest"))
    assert {(u["email"], ",".join(u["rights"])) for u in users} == {
        (owner, "view,execute,update,delete,invite"),
        (guest, "view"),
    }


def test_remove_template_user(
    cli: CliRunner, controller_process: RunningController, tmp_path: Path
) -> None:
    owner, guest, name = shared(cli, controller_process, tmp_path, "view")
    last = cli("remove", "template", "user", name, "--user", owner, user="owner")
    assert last.code == ExitCode.CONFLICT and "last user" in last.err
    ok(cli("remove", "template", "user", name, "--user", guest, user="owner"))
    assert cli("get", "template", name, user="guest").code == ExitCode.NOT_FOUND
