"""Account commands: register, verify email, login, logout, whoami, reset password, MFA."""

from __future__ import annotations

import contextlib
import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from cyclopts import Parameter

from domain.errors import FieldError, Invalid, Unauthenticated
from entrypoints.cli import client, verbs
from entrypoints.output import console

if TYPE_CHECKING:
    from adapters.http.accounts_client import AccountsClient
    from adapters.http.controller_client import ControllerClient
    from adapters.http.schemas.accounts import Login, MfaSetup, RecoveryCodes

ControllerUrl = Annotated[
    str | None,
    Parameter(
        help="The controller's URL. Default: $OPSICLE_CONTROLLER_URL, the config file, "
        "or http://127.0.0.1:13371"
    ),
]
EmailOpt = Annotated[str | None, Parameter(help="Your email address (asked for when omitted).")]
PasswordOpt = Annotated[
    str | None,
    Parameter(
        help="Your password. When omitted it is asked for on a terminal, or read as one "
        "line from standard input (so scripts can pipe it rather than show it in ps)."
    ),
]
CodeOpt = Annotated[
    str | None,
    Parameter(help="A code from your authenticator app, or one of your recovery codes."),
]


def _accounts(c: ControllerClient) -> AccountsClient:
    from adapters.http.accounts_client import AccountsClient

    return AccountsClient(c)


def _interactive() -> bool:
    return sys.stdin.isatty()


def _ask(value: str | None, field: str, prompt: str, *, secret: bool = False) -> str:
    """``value`` if given; else ask on a terminal, or read one line of standard input."""
    if value:
        return value
    if _interactive():
        answer = getpass.getpass(f"{prompt}: ") if secret else input(f"{prompt}: ")
    else:
        answer = sys.stdin.readline().rstrip("\n")
    if not answer.strip():
        flag = "--" + field.replace("_", "-")
        raise Invalid(f"{flag} is required", errors=(FieldError(flag, "is required"),))
    return answer


def _print(text: str) -> None:
    """Text that belongs on screen even when it is not a table (a QR code, a URI)."""
    if client.current()["output"] == "text":
        console().print(text, markup=False, highlight=False)


def _show_recovery_codes(codes: RecoveryCodes) -> None:
    if client.current()["output"] != "text":
        client.show(codes)
        return
    client.say(
        "Recovery codes: each works once, in place of an authenticator code. They are "
        "shown only now: keep them somewhere safe."
    )
    for code in codes.codes:
        _print(f"  {code}")


# ---------------------------------------------------------------- top-level commands


def register(
    *,
    email: EmailOpt = None,
    password: PasswordOpt = None,
    controller_url: ControllerUrl = None,
) -> int:
    """Create an account. A verification code is emailed: pass it to 'opsicle verify email'.

    The password needs at least 12 characters with upper- and lower-case letters, a digit
    and a symbol.
    """
    address = _ask(email, "email", "Email")
    secret = _ask(password, "password", "Password", secret=True)
    account = client.run(
        controller_url, lambda c: _accounts(c).register(address, secret), authenticated=False
    )
    client.say(
        f"Account {account.email} created. We emailed a verification code: run "
        "'opsicle verify email --code CODE' (on the embedded controller, "
        "'opsicle list emails' shows it)."
    )
    if client.current()["output"] != "text":
        client.show(account)
    return 0


def login(
    *,
    email: EmailOpt = None,
    password: PasswordOpt = None,
    code: Annotated[
        str | None,
        Parameter(
            help="A TOTP or recovery code, when your account has MFA (asked for when "
            "needed and omitted)."
        ),
    ] = None,
    controller_url: ControllerUrl = None,
) -> int:
    """Log in and keep the session for later commands (in your config directory, mode 0600)."""
    address = _ask(email, "email", "Email")
    secret = _ask(password, "password", "Password", secret=True)

    async def action(c: ControllerClient) -> Login:
        sdk = _accounts(c)
        result = await sdk.login(address, secret)
        if result.mfa_required and result.ticket:
            answer = _ask(code, "code", "Authenticator code (or a recovery code)")
            result = await sdk.login_with_code(result.ticket, answer)
        return result

    url = client.controller_url(controller_url)
    result = client.run(url, action, authenticated=False)
    if not result.session_token:
        raise Unauthenticated("the controller did not open a session")
    path = client.save_session(url, result.session_token, result.email or address)
    client.say(f"Logged in as {result.email or address} at {url} (session kept in {path}).")
    if client.current()["output"] != "text":
        client.show(
            {
                "email": result.email or address,
                "userId": result.user_id,
                "sessionId": result.session_id,
                "expiresAt": result.expires_at,
                "controllerUrl": url,
            }
        )
    return 0


def logout(*, controller_url: ControllerUrl = None) -> int:
    """End the session on the controller and forget it here."""
    # An ended or foreign session needs forgetting all the same.
    with contextlib.suppress(Unauthenticated):
        client.run(controller_url, lambda c: _accounts(c).logout())
    forgot = client.clear_session()
    client.say("Logged out." if forgot else "You were not logged in.")
    if client.current()["output"] != "text":
        client.show({"loggedOut": forgot})
    return 0


def whoami(*, controller_url: ControllerUrl = None) -> int:
    """Show the account this session belongs to."""
    me = client.run(controller_url, lambda c: _accounts(c).whoami())
    client.show(me)
    return 0


# ---------------------------------------------------------------- verbs


def verify_email(
    *,
    code: Annotated[str | None, Parameter(help="The code from the verification email.")] = None,
    resend: Annotated[bool, Parameter(help="Email a new code instead (needs --email).")] = False,
    email: Annotated[str | None, Parameter(help="The address to resend the code to.")] = None,
    controller_url: ControllerUrl = None,
) -> int:
    """Verify your email address with the emailed code, or have a new code sent (--resend)."""
    if resend:
        address = _ask(email, "email", "Email")
        answer = client.run(
            controller_url,
            lambda c: _accounts(c).resend_verification(address),
            authenticated=False,
        )
        client.say(answer.message[:1].upper() + answer.message[1:] + ".")
        if client.current()["output"] != "text":
            client.show(answer)
        return 0
    given = _ask(code, "code", "Verification code")
    account = client.run(
        controller_url, lambda c: _accounts(c).verify_email(given), authenticated=False
    )
    client.say(f"{account.email} is verified: you can log in with 'opsicle login'.")
    if client.current()["output"] != "text":
        client.show(account)
    return 0


def reset_password(
    *,
    email: Annotated[
        str | None, Parameter(help="Email a reset code to this address (forgotten password).")
    ] = None,
    code: Annotated[
        str | None, Parameter(help="The emailed reset code: sets the new password.")
    ] = None,
    new_password: Annotated[
        str | None, Parameter(help="The new password (asked for when omitted).")
    ] = None,
    current_password: Annotated[
        str | None,
        Parameter(
            help="When logged in: your current password, to change it (asked for when omitted)."
        ),
    ] = None,
    controller_url: ControllerUrl = None,
) -> int:
    """Reset a forgotten password, or change yours when logged in.

    Forgotten: 'reset password --email ADDRESS' emails a code (valid once, for 15 minutes),
    then 'reset password --code CODE' sets the new password and ends every session.
    Logged in, with neither flag: asks for the current and the new password; your other
    sessions end, this one stays.
    """
    if code:
        new = _ask(new_password, "new_password", "New password", secret=True)
        client.run(
            controller_url,
            lambda c: _accounts(c).complete_password_reset(code, new),
            authenticated=False,
        )
        client.say("Password set. Every session has ended: log in with 'opsicle login'.")
        if client.current()["output"] != "text":
            client.show({"passwordReset": True})
        return 0
    if email is None and client.load_session().get("token"):
        current = _ask(current_password, "current_password", "Current password", secret=True)
        new = _ask(new_password, "new_password", "New password", secret=True)
        client.run(controller_url, lambda c: _accounts(c).change_password(current, new))
        client.say("Password changed. Your other sessions have ended; this one stays.")
        if client.current()["output"] != "text":
            client.show({"passwordChanged": True})
        return 0
    address = _ask(email, "email", "Email")
    answer = client.run(
        controller_url,
        lambda c: _accounts(c).request_password_reset(address),
        authenticated=False,
    )
    client.say(
        answer.message[:1].upper() + answer.message[1:] + ": run 'opsicle reset password "
        "--code CODE' with the code it contains."
    )
    if client.current()["output"] != "text":
        client.show(answer)
    return 0


def create_mfa(
    *,
    password: PasswordOpt = None,
    code: Annotated[
        str | None,
        Parameter(
            help="Confirm an enrolment started earlier with this authenticator code "
            "(no new secret is made)."
        ),
    ] = None,
    controller_url: ControllerUrl = None,
) -> int:
    """Turn on TOTP multi-factor authentication.

    Shows a QR code (and the otpauth:// URI) for your authenticator app, then asks for a
    code from it; once confirmed, ten single-use recovery codes are shown, only this once.
    Without a terminal, the code is read from standard input; when there is none, confirm
    later with 'opsicle create mfa --code CODE'.
    """
    if code:
        codes = client.run(controller_url, lambda c: _accounts(c).confirm_mfa(code))
        client.say("Multi-factor authentication is on.")
        _show_recovery_codes(codes)
        return 0
    secret = _ask(password, "password", "Password", secret=True)
    setup = client.run(controller_url, lambda c: _accounts(c).enrol_mfa(secret))
    _show_setup(setup)
    if _interactive():
        answer = input("Code from your authenticator app: ").strip()
    else:
        answer = sys.stdin.readline().strip()
    if not answer:
        client.say("Confirm with 'opsicle create mfa --code CODE' once your app shows codes.")
        return 0
    codes = client.run(controller_url, lambda c: _accounts(c).confirm_mfa(answer))
    client.say("Multi-factor authentication is on.")
    _show_recovery_codes(codes)
    return 0


def _show_setup(setup: MfaSetup) -> None:
    if client.current()["output"] != "text":
        client.show(setup)
        return
    import io

    import segno

    out = io.StringIO()
    segno.make(setup.uri, error="m").terminal(out=out, compact=True)
    client.say("Scan this QR code with your authenticator app (or enter the secret by hand):")
    _print(out.getvalue())
    _print(f"URI:    {setup.uri}")
    _print(f"Secret: {setup.secret}")


def get_mfa(*, controller_url: ControllerUrl = None) -> int:
    """Show whether MFA is on and how many recovery codes are left."""
    status = client.run(controller_url, lambda c: _accounts(c).mfa_status())
    client.show(status)
    return 0


def remove_mfa(
    *,
    password: PasswordOpt = None,
    code: CodeOpt = None,
    controller_url: ControllerUrl = None,
) -> int:
    """Turn multi-factor authentication off (needs your password and a current code)."""
    secret = _ask(password, "password", "Password", secret=True)
    answer = _ask(code, "code", "Authenticator code (or a recovery code)")
    client.run(controller_url, lambda c: _accounts(c).remove_mfa(secret, answer))
    client.say("Multi-factor authentication is off.")
    if client.current()["output"] != "text":
        client.show({"mfaRemoved": True})
    return 0


def list_emails(
    *,
    to: Annotated[str | None, Parameter(help="Only emails to this address.")] = None,
    last: Annotated[int | None, Parameter(help="Only the newest N emails.")] = None,
    data_dir: Annotated[
        Path | None,
        Parameter(help="The embedded controller's data directory. Default: ~/.local/share/opsicle"),
    ] = None,
) -> int:
    """Show the emails the embedded controller wrote to its outbox (when no SMTP is set up).

    Verification and reset codes arrive there: this reads <data-dir>/outbox on this machine.
    """
    from adapters.mail.outbox import list_outbox

    settings = client.current().with_flags(data_dir=str(data_dir) if data_dir else None)
    emails = list_outbox(settings.data_dir / "outbox")
    if to:
        emails = [e for e in emails if to.lower() in e.email.to.lower()]
    if last is not None:
        emails = emails[-last:] if last > 0 else []
    rows = [
        {
            "sentAt": e.sent_at.isoformat() if e.sent_at else "",
            "from": e.sender,
            "to": e.email.to,
            "subject": e.email.subject,
            "text": e.email.text,
        }
        for e in emails
    ]
    if client.current()["output"] != "text":
        client.show(rows)
        return 0
    if not rows:
        client.say(f"No emails in {settings.data_dir / 'outbox'}.")
    for row in rows:
        _print(f"── {row['sentAt']}  to {row['to']}  «{row['subject']}»")
        _print(row["text"])
        _print("")
    return 0


verbs.create.command(create_mfa, name="mfa")
verbs.get.command(get_mfa, name="mfa")
verbs.remove.command(remove_mfa, name="mfa")
verbs.verify.command(verify_email, name="email")
verbs.reset.command(reset_password, name="password")
verbs.list_.command(list_emails, name="emails")
