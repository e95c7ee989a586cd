"""One test per org command, run in-process against a real controller process."""

from __future__ import annotations

import itertools
import json
import re
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.entrypoints.conftest import CliResult, CliRunner, RunningController

PASSWORD = "p@ssw0rd!!Opsicle"
_n = itertools.count()


@pytest.fixture(autouse=True)
def wide_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables as wide as their rows, so cells are not wrapped in what the tests read."""
    monkeypatch.setenv("COLUMNS", "250")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def ok(result: CliResult) -> CliResult:
    assert result.code == 0, result.err or result.out
    return result


def data(result: CliResult) -> Any:
    return json.loads(ok(result).out)


def last_code(controller: RunningController, email: str, pattern: str) -> str:
    emails = controller.emails(email)
    assert emails, f"no email to {email}"
    match = re.search(pattern, emails[-1].email.text)
    assert match, emails[-1].email.text
    return match.group(1)


def signup(cli: CliRunner, controller: RunningController, who: str) -> str:
    """Register, verify and log in a new user whose config directory is ``who``."""
    email = f"{unique(who)}@example.com"
    ok(cli("register", "--email", email, "--password", PASSWORD, user=who))
    code = last_code(controller, email, r"--code (\S+)")
    ok(cli("verify", "email", "--code", code, user=who))
    ok(cli("login", "--email", email, "--password", PASSWORD, user=who))
    return email


def new_org(cli: CliRunner, who: str) -> str:
    code = unique("org")
    ok(cli("create", "org", "Acme Operations", "--code", code, user=who))
    return code


def with_member(
    cli: CliRunner, controller: RunningController, member_type: str = "member"
) -> tuple[str, str, str]:
    """An org made by 'admin' that 'bob' joined; returns both emails and the org code."""
    admin = signup(cli, controller, "admin")
    bob = signup(cli, controller, "bob")
    code = new_org(cli, "admin")
    ok(cli("invite", bob, "--org", code, "--type", member_type, user="admin"))
    join = last_code(controller, bob, r"join code: (\S+)")
    ok(cli("join", "org", "--code", join, user="bob"))
    return admin, bob, code


def test_create_org(cli: CliRunner, controller_process: RunningController) -> None:
    signup(cli, controller_process, "admin")
    code = unique("org")
    created = data(
        cli("-o", "json", "create", "org", "Acme Operations", "--code", code, user="admin")
    )
    assert created["code"] == code
    assert created["memberType"] == "admin"
    taken = cli("create", "org", "Other Name", "--code", code, user="admin")
    assert taken.code == 9
    assert "taken" in taken.err
    bad = cli("create", "org", "Bad", "--code", "x", user="admin")
    assert bad.code == 2
    assert "code" in bad.err


def test_get_org(cli: CliRunner, controller_process: RunningController) -> None:
    signup(cli, controller_process, "admin")
    code = new_org(cli, "admin")
    assert data(cli("get", "org", code, "-o", "json", user="admin"))["code"] == code
    assert code in ok(cli("get", "org", code, user="admin")).out
    signup(cli, controller_process, "stranger")
    hidden = cli("get", "org", code, user="stranger")
    assert hidden.code == 6


def test_list_orgs(cli: CliRunner, controller_process: RunningController) -> None:
    signup(cli, controller_process, "admin")
    code = new_org(cli, "admin")
    assert [o["code"] for o in data(cli("list", "orgs", "-o", "json", user="admin"))] == [code]
    assert code in ok(cli("list", "orgs", user="admin")).out
    assert "code:" in ok(cli("list", "orgs", "-o", "yaml", user="admin")).out


def test_remove_org(cli: CliRunner, controller_process: RunningController) -> None:
    _, _, code = with_member(cli, controller_process)
    unconfirmed = cli("remove", "org", code, user="admin")
    assert unconfirmed.code == 2
    assert "--yes" in unconfirmed.err
    denied = cli("remove", "org", code, "--yes", user="bob")
    assert denied.code == 7
    assert "has no role" in denied.err
    assert "deleted" in ok(cli("remove", "org", code, "--yes", user="admin")).out
    assert cli("get", "org", code, user="admin").code == 6


def test_invite(cli: CliRunner, controller_process: RunningController) -> None:
    signup(cli, controller_process, "admin")
    code = new_org(cli, "admin")
    email = f"{unique('invitee')}@example.com"
    sent = data(
        cli("invite", email, "--org", code, "--type", "operator", "-o", "json", user="admin")
    )
    assert sent["memberType"] == "operator"
    assert "joinCode" not in sent
    assert last_code(controller_process, email, r"join code: (\S+)").startswith("join-")
    again = cli("invite", email, "--org", code, user="admin")
    assert again.code == 9


def test_list_org_invitations(cli: CliRunner, controller_process: RunningController) -> None:
    signup(cli, controller_process, "admin")
    code = new_org(cli, "admin")
    email = f"{unique('invitee')}@example.com"
    ok(cli("invite", email, "--org", code, user="admin"))
    listed = data(cli("list", "org", "invitations", "--org", code, "-o", "json", user="admin"))
    assert [(i["email"], i["status"]) for i in listed] == [(email, "pending")]


def test_list_invitations(cli: CliRunner, controller_process: RunningController) -> None:
    signup(cli, controller_process, "admin")
    bob = signup(cli, controller_process, "bob")
    code = new_org(cli, "admin")
    ok(cli("invite", bob, "--org", code, user="admin"))
    [mine] = data(cli("list", "invitations", "-o", "json", user="bob"))
    assert mine["orgCode"] == code
    assert code in ok(cli("list", "invitations", user="bob")).out


def test_join_org(cli: CliRunner, controller_process: RunningController) -> None:
    _, bob, code = with_member(cli, controller_process, "operator")
    assert data(cli("get", "org", code, "-o", "json", user="bob"))["memberType"] == "operator"
    signup(cli, controller_process, "carol")
    no_code = cli("join", "org", user="carol")
    assert no_code.code == 2
    wrong = cli("join", "org", "--code", "join-nope", user="carol")
    assert wrong.code == 6
    del bob


def test_join_org_reject(cli: CliRunner, controller_process: RunningController) -> None:
    signup(cli, controller_process, "admin")
    bob = signup(cli, controller_process, "bob")
    code = new_org(cli, "admin")
    ok(cli("invite", bob, "--org", code, user="admin"))
    join = last_code(controller_process, bob, r"join code: (\S+)")
    assert "rejected" in ok(cli("join", "org", "--code", join, "--reject", user="bob")).out
    assert cli("join", "org", "--code", join, user="bob").code == 6


def test_leave_org(cli: CliRunner, controller_process: RunningController) -> None:
    _, _, code = with_member(cli, controller_process)
    last = cli("leave", "org", code, user="admin")
    assert last.code == 9
    assert "last admin" in last.err
    assert "left" in ok(cli("leave", "org", code, user="bob")).out
    assert cli("get", "org", code, user="bob").code == 6


def test_list_org_members(cli: CliRunner, controller_process: RunningController) -> None:
    admin, bob, code = with_member(cli, controller_process)
    members = data(cli("list", "org", "members", "--org", code, "-o", "json", user="admin"))
    assert {m["email"]: m["type"] for m in members} == {admin: "admin", bob: "member"}
    text = ok(cli("list", "org", "members", "--org", code, user="admin")).out
    assert "Administrator (Default)" in text
    assert cli("list", "org", "members", "--org", code, user="bob").code == 7


def test_update_org_member(cli: CliRunner, controller_process: RunningController) -> None:
    admin, bob, code = with_member(cli, controller_process)
    changed = data(
        cli(
            "update",
            "org",
            "member",
            bob,
            "--org",
            code,
            "--type",
            "admin",
            "-o",
            "json",
            user="admin",
        )
    )
    assert changed["email"] == bob
    assert changed["type"] == "admin"
    assert [r["name"] for r in changed["roles"]] == ["Administrator (Default)"]
    demoted = data(
        cli(
            "update",
            "org",
            "member",
            admin,
            "--org",
            code,
            "--type",
            "member",
            "-o",
            "json",
            user="bob",
        )
    )
    assert demoted["email"] == admin
    last = cli("update", "org", "member", bob, "--org", code, "--type", "member", user="bob")
    assert last.code == 9


def test_remove_org_member(cli: CliRunner, controller_process: RunningController) -> None:
    admin, bob, code = with_member(cli, controller_process)
    assert cli("remove", "org", "member", admin, "--org", code, user="bob").code == 7
    assert "removed" in ok(cli("remove", "org", "member", bob, "--org", code, user="admin")).out
    members = data(cli("list", "org", "members", "--org", code, "-o", "json", user="admin"))
    assert [m["email"] for m in members] == [admin]


def test_list_org_roles(cli: CliRunner, controller_process: RunningController) -> None:
    signup(cli, controller_process, "admin")
    code = new_org(cli, "admin")
    listed = data(cli("list", "org", "roles", "--org", code, "-o", "json", user="admin"))
    assert [r["name"] for r in listed] == ["Administrator (Default)", "Worker (Default)"]
    assert "templates=view" in ok(cli("list", "org", "roles", "--org", code, user="admin")).out


def test_create_org_role(cli: CliRunner, controller_process: RunningController) -> None:
    signup(cli, controller_process, "admin")
    code = new_org(cli, "admin")
    role = data(
        cli(
            "create",
            "org",
            "role",
            "Runner",
            "--org",
            code,
            "--allow",
            "templates=view,run",
            "--deny",
            "org=delete",
            "-o",
            "json",
            user="admin",
        )
    )
    assert role["grants"] == {
        "org": {"allow": [], "deny": ["delete"]},
        "templates": {"allow": ["view", "execute"], "deny": []},
    }
    bad = cli("create", "org", "role", "Bad", "--org", code, "--allow", "planets=fly", user="admin")
    assert bad.code == 2
    assert cli("create", "org", "role", "runner", "--org", code, user="admin").code == 9


def test_update_org_role(cli: CliRunner, controller_process: RunningController) -> None:
    signup(cli, controller_process, "admin")
    code = new_org(cli, "admin")
    ok(
        cli(
            "create",
            "org",
            "role",
            "Runner",
            "--org",
            code,
            "--allow",
            "templates=view",
            user="admin",
        )
    )
    merged = data(
        cli(
            "update",
            "org",
            "role",
            "Runner",
            "--org",
            code,
            "--name",
            "Deployer",
            "--allow",
            "automations=create",
            "-o",
            "json",
            user="admin",
        )
    )
    assert merged["name"] == "Deployer"
    assert set(merged["grants"]) == {"templates", "automations"}
    replaced = data(
        cli(
            "update",
            "org",
            "role",
            "Deployer",
            "--org",
            code,
            "--replace",
            "--allow",
            "org=view",
            "-o",
            "json",
            user="admin",
        )
    )
    assert list(replaced["grants"]) == ["org"]
    builtin = cli(
        "update",
        "org",
        "role",
        "Administrator (Default)",
        "--org",
        code,
        "--name",
        "Boss",
        user="admin",
    )
    assert builtin.code == 9


def test_remove_org_role(cli: CliRunner, controller_process: RunningController) -> None:
    signup(cli, controller_process, "admin")
    code = new_org(cli, "admin")
    ok(cli("create", "org", "role", "Temp", "--org", code, user="admin"))
    assert "deleted" in ok(cli("remove", "org", "role", "Temp", "--org", code, user="admin")).out
    assert cli("remove", "org", "role", "Worker (Default)", "--org", code, user="admin").code == 9


def test_assign_and_unassign_org_role(
    cli: CliRunner, controller_process: RunningController
) -> None:
    _, bob, code = with_member(cli, controller_process)
    ok(
        cli(
            "create",
            "org",
            "role",
            "Runner",
            "--org",
            code,
            "--allow",
            "templates=execute",
            user="admin",
        )
    )
    assert cli("can", "execute", "templates", "--org", code, user="bob").code == 7
    ok(cli("assign", "org", "role", "Runner", "--org", code, "--user", bob, user="admin"))
    assert cli("can", "execute", "templates", "--org", code, user="bob").code == 0
    ok(cli("unassign", "org", "role", "Runner", "--org", code, "--user", bob, user="admin"))
    assert cli("can", "execute", "templates", "--org", code, user="bob").code == 7
    neither = cli("assign", "org", "role", "Runner", "--org", code, user="admin")
    assert neither.code == 2
    token = data(cli("create", "org", "token", "w1", "--org", code, "-o", "json", user="admin"))
    ok(cli("assign", "org", "role", "Runner", "--org", code, "--token", "w1", user="admin"))
    ok(
        cli(
            "unassign",
            "org",
            "role",
            "Worker (Default)",
            "--org",
            code,
            "--token",
            token["id"],
            user="admin",
        )
    )
    shown = data(cli("get", "org", "token", "w1", "--org", code, "-o", "json", user="admin"))
    assert [r["name"] for r in shown["roles"]] == ["Runner"]


def test_can(cli: CliRunner, controller_process: RunningController) -> None:
    _, bob, code = with_member(cli, controller_process)
    allowed = ok(cli("can", "delete", "org", "--org", code, user="admin"))
    assert "allowed: role Administrator (Default) allows delete org" in allowed.out
    about_bob = cli("can", "delete", "org", "--org", code, "--user", bob, user="admin")
    assert about_bob.code == 7
    assert "denied: has no role in this organisation" in about_bob.out
    answer = json.loads(cli("can", "view", "org", "--org", code, "-o", "json", user="bob").out)
    assert answer["allowed"] is False
    assert cli("can", "fly", "org", "--org", code, user="admin").code == 2


def test_create_org_token(
    cli: CliRunner, controller_process: RunningController, tmp_path: Path
) -> None:
    signup(cli, controller_process, "admin")
    code = new_org(cli, "admin")
    shown = data(
        cli("create", "org", "token", "printed", "--org", code, "-o", "json", user="admin")
    )
    assert shown["token"].startswith("opsicle-")
    out = tmp_path / "tokens"
    written = ok(
        cli(
            "create",
            "org",
            "token",
            "filed",
            "--org",
            code,
            "--output-dir",
            str(out),
            "--role",
            "Worker (Default)",
            user="admin",
        )
    )
    assert "opsicle-" not in written.out
    [secret_file] = list(out.glob("*.token"))
    [env_file] = list(out.glob("*.env"))
    for path in (secret_file, env_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert secret_file.read_text().startswith("opsicle-")
    assert f"OPSICLE_TOKEN_ID={secret_file.stem}" in env_file.read_text()


def test_list_org_tokens(cli: CliRunner, controller_process: RunningController) -> None:
    signup(cli, controller_process, "admin")
    code = new_org(cli, "admin")
    secret = data(cli("create", "org", "token", "w1", "--org", code, "-o", "json", user="admin"))[
        "token"
    ]
    listed = ok(cli("list", "org", "tokens", "--org", code, "-o", "json", user="admin"))
    assert secret not in listed.out
    assert [t["name"] for t in json.loads(listed.out)] == ["w1"]
    assert "Worker (Default)" in ok(cli("list", "org", "tokens", "--org", code, user="admin")).out


def test_get_org_token(cli: CliRunner, controller_process: RunningController) -> None:
    signup(cli, controller_process, "admin")
    code = new_org(cli, "admin")
    made = data(cli("create", "org", "token", "w1", "--org", code, "-o", "json", user="admin"))
    got = data(cli("get", "org", "token", made["id"], "--org", code, "-o", "json", user="admin"))
    assert got["name"] == "w1"
    assert "token" not in got
    assert "w1" in ok(cli("get", "org", "token", "w1", "--org", code, user="admin")).out
    assert cli("get", "org", "token", "nope", "--org", code, user="admin").code == 6


def test_revoke_org_token(cli: CliRunner, controller_process: RunningController) -> None:
    signup(cli, controller_process, "admin")
    code = new_org(cli, "admin")
    ok(cli("create", "org", "token", "w1", "--org", code, user="admin"))
    assert "revoked" in ok(cli("revoke", "org", "token", "w1", "--org", code, user="admin")).out
    got = data(cli("get", "org", "token", "w1", "--org", code, "-o", "json", user="admin"))
    assert got["active"] is False
    assert cli("revoke", "org", "token", "w1", "--org", code, user="admin").code == 9


def test_rotate_org_token(
    cli: CliRunner, controller_process: RunningController, tmp_path: Path
) -> None:
    signup(cli, controller_process, "admin")
    code = new_org(cli, "admin")
    first = data(cli("create", "org", "token", "w1", "--org", code, "-o", "json", user="admin"))
    rotated = data(cli("rotate", "org", "token", "w1", "--org", code, "-o", "json", user="admin"))
    assert rotated["id"] == first["id"]
    assert rotated["token"] != first["token"]
    ok(
        cli(
            "rotate",
            "org",
            "token",
            "w1",
            "--org",
            code,
            "--output-dir",
            str(tmp_path),
            user="admin",
        )
    )
    assert (tmp_path / f"{first['id']}.token").read_text().strip() != rotated["token"]


def test_list_audit_logs(cli: CliRunner, controller_process: RunningController) -> None:
    admin, bob, code = with_member(cli, controller_process)
    for name in ("w1", "w2", "w3"):
        ok(cli("create", "org", "token", name, "--org", code, user="admin"))
    page = data(
        cli(
            "list",
            "audit-logs",
            "--verb",
            "token.create",
            "--limit",
            "2",
            "-o",
            "json",
            user="admin",
        )
    )
    assert [e["data"]["name"] for e in page["items"]] == ["w1", "w2"]
    rest = data(
        cli(
            "list",
            "audit-logs",
            "--verb",
            "token.create",
            "--cursor",
            page["nextCursor"],
            "-o",
            "json",
            user="admin",
        )
    )
    assert [e["data"]["name"] for e in rest["items"]] == ["w3"]
    org_trail = data(
        cli(
            "list",
            "audit-logs",
            "--org",
            code,
            "--resource",
            "invitation",
            "-o",
            "json",
            user="admin",
        )
    )
    assert [e["verb"] for e in org_trail["items"]] == ["org.invite", "invitation.accept"]
    since = page["items"][1]["at"]
    window = data(
        cli(
            "list",
            "audit-logs",
            "--org",
            code,
            "--verb",
            "token.create",
            "--since",
            since,
            "-o",
            "json",
            user="admin",
        )
    )
    assert [e["data"]["name"] for e in window["items"]] == ["w2", "w3"]
    by_bob = data(
        cli("list", "audit-logs", "--org", code, "--actor", bob, "-o", "json", user="admin")
    )
    assert [(e["verb"], e["actorEmail"]) for e in by_bob["items"]] == [("invitation.accept", bob)]
    text = ok(cli("list", "audit-logs", "--limit", "1", user="admin")).out
    assert "more: --cursor" in text
    # The text table names the actor by email (its first event, the sign-up, is about
    # the account itself, so the user id is still there as the resource).
    assert admin in text
    assert cli("list", "audit-logs", "--org", code, user="bob").code == 7


def test_audit_verify(cli: CliRunner, controller_process: RunningController) -> None:
    signup(cli, controller_process, "admin")
    new_org(cli, "admin")
    assert "the chain holds" in ok(cli("audit", "verify", user="admin")).out
    check = data(cli("audit", "verify", "-o", "json", user="admin"))
    assert check["ok"] is True
    assert check["checked"] > 0


@pytest.mark.parametrize(
    "command",
    [
        ("create", "org"),
        ("get", "org"),
        ("list", "orgs"),
        ("remove", "org"),
        ("invite",),
        ("list", "org", "invitations"),
        ("list", "invitations"),
        ("join", "org"),
        ("leave", "org"),
        ("list", "org", "members"),
        ("update", "org", "member"),
        ("remove", "org", "member"),
        ("list", "org", "roles"),
        ("create", "org", "role"),
        ("update", "org", "role"),
        ("remove", "org", "role"),
        ("assign", "org", "role"),
        ("unassign", "org", "role"),
        ("create", "org", "token"),
        ("list", "org", "tokens"),
        ("get", "org", "token"),
        ("revoke", "org", "token"),
        ("rotate", "org", "token"),
        ("list", "audit-logs"),
        ("audit", "verify"),
        ("can",),
    ],
)
def test_every_org_command_has_help_and_a_controller_url(
    command: tuple[str, ...], cli: CliRunner
) -> None:
    result = ok(cli(*command, "--help"))
    assert "--controller-url" in result.out


def test_commands_need_a_login(cli: CliRunner) -> None:
    result = cli("list", "orgs", user=f"nobody{next(_n)}")
    assert result.code == 8
    assert "opsicle login" in result.err
