"""The account commands against a real controller process, one test per command."""

from __future__ import annotations

import json
import os
import re
import stat
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pyotp
import yaml

from entrypoints.exitcodes import ExitCode
from tests.entrypoints.conftest import CliRunner, RunningController

PASSWORD = "p@ssw0rd!!Opsicle"
NEW_PASSWORD = "N3w-p@ssword!!"


def unique_email() -> str:
    return f"cli-{uuid.uuid4().hex[:12]}+tag@example.com"


def latest_code(controller: RunningController, email: str) -> str:
    found = re.search(r"--code (\S+)", controller.emails(email)[-1].email.text)
    assert found, controller.emails(email)[-1].email.text
    return found.group(1)


def signed_up(cli: CliRunner, controller: RunningController) -> str:
    """A registered, verified and logged-in account; its email."""
    email = unique_email()
    assert cli("register", "--email", email, "--password", PASSWORD).code == 0
    assert cli("verify", "email", "--code", latest_code(controller, email)).code == 0
    assert cli("login", "--email", email, "--password", PASSWORD).code == 0
    return email


def enrol(cli: CliRunner) -> tuple[pyotp.TOTP, list[str]]:
    """Turn MFA on for the logged-in user: its authenticator and recovery codes."""
    started = cli("create", "mfa", "--password", PASSWORD, "-o", "json", stdin="")
    assert started.code == 0, started.err
    app = pyotp.parse_uri(json.loads(started.out)["uri"])
    assert isinstance(app, pyotp.TOTP)
    done = cli("create", "mfa", "--code", app.now(), "-o", "json")
    assert done.code == 0, done.err
    return app, json.loads(done.out)["codes"]


def next_window_code(app: pyotp.TOTP) -> str:
    """A code of a later window than any used so far (each is accepted once)."""
    return app.at(datetime.now(UTC).timestamp() + 30)


def test_register(cli: CliRunner, controller_process: RunningController) -> None:
    email = unique_email()
    result = cli("register", "--email", email, "--password", PASSWORD, "-o", "json")
    assert result.code == 0, result.err
    account = json.loads(result.out)
    assert account["email"] == email and account["verified"] is False
    [mail] = controller_process.emails(email)
    assert f"/api/v1/verification/{latest_code(controller_process, email)}" in mail.email.text
    again = cli("register", "--email", email, "--password", PASSWORD)
    assert again.code == ExitCode.CONFLICT and "exists" in again.err
    weak = cli("register", "--email", unique_email(), "--password", "weak")
    assert weak.code == ExitCode.INVALID and "password" in weak.err


def test_register_reads_a_piped_password(
    cli: CliRunner, controller_process: RunningController
) -> None:
    email = unique_email()
    result = cli("register", "--email", email, stdin=PASSWORD + "\n")
    assert result.code == 0, result.err
    assert "verify email" in result.out
    missing = cli("register", "--email", unique_email(), stdin="")
    assert missing.code == ExitCode.INVALID and "--password" in missing.err


def test_verify_email(cli: CliRunner, controller_process: RunningController) -> None:
    email = unique_email()
    cli("register", "--email", email, "--password", PASSWORD)
    unverified = cli("login", "--email", email, "--password", PASSWORD)
    assert unverified.code == ExitCode.FORBIDDEN and "verify" in unverified.err
    resent = cli("verify", "email", "--resend", "--email", email)
    assert resent.code == 0 and len(controller_process.emails(email)) == 2
    code = latest_code(controller_process, email)
    result = cli("verify", "email", "--code", code, "-o", "yaml")
    assert result.code == 0, result.err
    assert yaml.safe_load(result.out)["verified"] is True
    # The same code again (the owner after a mail scanner) answers that it is verified.
    assert cli("verify", "email", "--code", code).code == 0
    wrong = cli("verify", "email", "--code", "not-a-code")
    assert wrong.code == ExitCode.INVALID and "code" in wrong.err


def test_login(cli: CliRunner, controller_process: RunningController, tmp_path: Path) -> None:
    email = signed_up(cli, controller_process)
    session = tmp_path / "config" / "opsicle" / "session.json"
    assert stat.S_IMODE(os.stat(session).st_mode) == 0o600
    assert json.loads(session.read_text())["email"] == email
    wrong = cli("login", "--email", email, "--password", "Wr0ng-password!", user="other")
    assert wrong.code == ExitCode.UNAUTHENTICATED and "wrong" in wrong.err
    # Prompts read from standard input when it is not a terminal.
    piped = cli("login", "-o", "json", user="piped", stdin=f"{email}\n{PASSWORD}\n")
    assert piped.code == 0, piped.err
    assert json.loads(piped.out)["email"] == email


def test_login_with_mfa(cli: CliRunner, controller_process: RunningController) -> None:
    email = signed_up(cli, controller_process)
    app, codes = enrol(cli)
    with_code = cli(
        "login",
        "--email",
        email,
        "--password",
        PASSWORD,
        "--code",
        next_window_code(app),
        user="laptop",
    )
    assert with_code.code == 0, with_code.err
    asked = cli(
        "login", "--email", email, "--password", PASSWORD, user="phone", stdin=codes[0] + "\n"
    )
    assert asked.code == 0, asked.err
    assert cli("whoami", user="phone").code == 0
    reused = cli(
        "login", "--email", email, "--password", PASSWORD, "--code", codes[0], user="tablet"
    )
    assert reused.code == ExitCode.INVALID


def test_logout(cli: CliRunner, controller_process: RunningController) -> None:
    signed_up(cli, controller_process)
    result = cli("logout")
    assert result.code == 0 and "Logged out" in result.out
    assert cli("whoami").code == ExitCode.UNAUTHENTICATED
    assert "not logged in" in cli("logout").out


def test_whoami(cli: CliRunner, controller_process: RunningController) -> None:
    assert cli("whoami").code == ExitCode.UNAUTHENTICATED
    email = signed_up(cli, controller_process)
    text = cli("whoami")
    assert text.code == 0 and email in text.out
    data = json.loads(cli("whoami", "-o", "json").out)
    assert data["email"] == email and data["verified"] is True
    elsewhere = cli("whoami", "--controller-url", "http://127.0.0.1:1")
    assert elsewhere.code == ExitCode.UNAUTHENTICATED and "session is for" in elsewhere.err


def test_controller_unreachable(cli: CliRunner) -> None:
    result = cli(
        "register",
        "--email",
        unique_email(),
        "--password",
        PASSWORD,
        "--controller-url",
        "http://127.0.0.1:1",
    )
    assert result.code == ExitCode.UNAVAILABLE and "did not answer" in result.err


def test_reset_password(cli: CliRunner, controller_process: RunningController) -> None:
    email = signed_up(cli, controller_process)
    asked = cli("reset", "password", "--email", email)
    assert asked.code == 0 and "email is on its way" in asked.out
    unknown = cli("reset", "password", "--email", unique_email())
    assert unknown.code == 0 and unknown.out == asked.out
    code = latest_code(controller_process, email)
    done = cli("reset", "password", "--code", code, "--new-password", NEW_PASSWORD)
    assert done.code == 0, done.err
    assert cli("whoami").code == ExitCode.UNAUTHENTICATED  # every session ended
    assert cli("login", "--email", email, "--password", NEW_PASSWORD).code == 0
    reused = cli("reset", "password", "--code", code, "--new-password", PASSWORD)
    assert reused.code == ExitCode.INVALID


def test_reset_password_when_logged_in_changes_it(
    cli: CliRunner, controller_process: RunningController
) -> None:
    email = signed_up(cli, controller_process)
    wrong = cli(
        "reset", "password", "--current-password", "Wr0ng-password!", "--new-password", NEW_PASSWORD
    )
    assert wrong.code == ExitCode.FORBIDDEN
    changed = cli("reset", "password", stdin=f"{PASSWORD}\n{NEW_PASSWORD}\n")
    assert changed.code == 0, changed.err
    assert cli("whoami").code == 0  # this session stays
    assert cli("login", "--email", email, "--password", NEW_PASSWORD, user="b").code == 0


def test_create_mfa(cli: CliRunner, controller_process: RunningController) -> None:
    signed_up(cli, controller_process)
    started = cli("create", "mfa", "--password", PASSWORD, stdin="")
    assert started.code == 0, started.err
    uri = re.search(r"otpauth://\S+", started.out)
    assert uri is not None
    assert "▀" in started.out or "█" in started.out  # the QR code
    assert "create mfa --code" in started.out
    assert isinstance(pyotp.parse_uri(uri.group(0)), pyotp.TOTP)
    # The code can be typed in right away too: a new enrolment replaces the unconfirmed one.
    again = cli("create", "mfa", "--password", PASSWORD, "-o", "json", stdin="")
    app = pyotp.parse_uri(json.loads(again.out)["uri"])
    assert isinstance(app, pyotp.TOTP)
    confirmed = cli("create", "mfa", "--code", app.now())
    assert confirmed.code == 0, confirmed.err
    assert (
        len(re.findall(r"^\s+[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}$", confirmed.out, re.MULTILINE))
        == 10
    )
    status = json.loads(cli("get", "mfa", "-o", "json").out)
    assert status["active"] is True and status["recoveryCodesLeft"] == 10
    twice = cli("create", "mfa", "--password", PASSWORD, stdin="")
    assert twice.code == ExitCode.CONFLICT


def test_create_mfa_in_one_go(cli: CliRunner, controller_process: RunningController) -> None:
    signed_up(cli, controller_process)
    # The secret only exists once enrolment starts, so feed a wrong code on stdin: the
    # command asks the controller to confirm and reports the refusal.
    wrong = cli("create", "mfa", "--password", PASSWORD, stdin="000000\n")
    assert wrong.code == ExitCode.INVALID
    assert not json.loads(cli("get", "mfa", "-o", "json").out)["active"]


def test_remove_mfa(cli: CliRunner, controller_process: RunningController) -> None:
    email = signed_up(cli, controller_process)
    _, codes = enrol(cli)
    no_code = cli("remove", "mfa", "--password", PASSWORD, "--code", "nope-nope-nope")
    assert no_code.code == ExitCode.INVALID
    wrong_password = cli("remove", "mfa", "--password", "Wr0ng-password!", "--code", codes[0])
    assert wrong_password.code == ExitCode.FORBIDDEN
    removed = cli("remove", "mfa", "--password", PASSWORD, "--code", codes[1])
    assert removed.code == 0, removed.err
    # No code is asked for any more.
    assert cli("login", "--email", email, "--password", PASSWORD, user="x", stdin="").code == 0


def test_list_emails(cli: CliRunner, controller_process: RunningController) -> None:
    email = unique_email()
    cli("register", "--email", email, "--password", PASSWORD)
    data_dir = str(controller_process.data_dir)
    text = cli("list", "emails", "--data-dir", data_dir, "--to", email)
    assert text.code == 0 and "Verify your Opsicle email address" in text.out
    assert latest_code(controller_process, email) in text.out
    rows = json.loads(
        cli("list", "emails", "--data-dir", data_dir, "--to", email, "-o", "json").out
    )
    assert [r["to"] for r in rows] == [email]
    assert (
        json.loads(cli("list", "emails", "--data-dir", data_dir, "--last", "0", "-o", "json").out)
        == []
    )
