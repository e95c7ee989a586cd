"""Account endpoints: registration, email verification, sessions, passwords, MFA."""

from __future__ import annotations

from adapters.http.schemas.accounts import (
    Accepted,
    Account,
    Credentials,
    EmailAddress,
    Login,
    MfaAnswer,
    MfaCode,
    MfaRemoval,
    MfaSetup,
    MfaStatus,
    PasswordChange,
    PasswordCheck,
    PasswordReset,
    RecoveryCodes,
    Registration,
    VerificationCode,
    WhoAmI,
)
from domain.errors import Unauthenticated
from domain.services import accounts
from domain.services.platform import Platform
from domain.users import User
from entrypoints.http.api import Api, Call

TAG = "accounts"
SENT = "if the address has an account, an email is on its way"


def _account(user: User) -> Account:
    return Account(id=user.id, email=user.email, verified=user.verified, created_at=user.created_at)


def _login(result: accounts.LoggedIn | accounts.MfaRequired) -> Login:
    if isinstance(result, accounts.MfaRequired):
        return Login(mfa_required=True, ticket=result.ticket, expires_at=result.expires_at)
    return Login(
        mfa_required=False,
        session_token=result.token,
        session_id=result.session.id,
        expires_at=result.session.expires_at,
        user_id=result.user.id,
        email=result.user.email,
    )


def register(api: Api, p: Platform) -> None:
    @api.endpoint(
        "POST",
        "/api/v1/users",
        summary="Register an account (emails a code)",
        tag=TAG,
        body=Registration,
        response=Account,
        status=201,
        auth=False,
    )
    async def register_user(call: Call) -> Account:
        body: Registration = call.body
        return _account(await accounts.register(p, call.caller, body.email, body.password))

    @api.endpoint("GET", "/api/v1/users/me", summary="My account", tag=TAG, response=Account)
    async def get_my_account(call: Call) -> Account:
        return _account(await accounts.whoami(p, call.caller))

    @api.endpoint(
        "GET", "/api/v1/whoami", summary="Who the session belongs to", tag=TAG, response=WhoAmI
    )
    async def whoami(call: Call) -> WhoAmI:
        user = await accounts.whoami(p, call.caller)
        return WhoAmI(id=user.id, email=user.email, verified=user.verified)

    @api.endpoint(
        "POST",
        "/api/v1/verification",
        summary="Verify an email address by code",
        tag=TAG,
        body=VerificationCode,
        response=Account,
        auth=False,
    )
    async def verify_email(call: Call) -> Account:
        body: VerificationCode = call.body
        return _account(await accounts.verify_email(p, call.caller, body.code))

    @api.endpoint(
        "GET",
        "/api/v1/verification/{code}",
        summary="Verify an email address (the emailed link)",
        tag=TAG,
        response=Account,
        auth=False,
    )
    async def verify_email_link(call: Call) -> Account:
        return _account(await accounts.verify_email(p, call.caller, call.path["code"]))

    @api.endpoint(
        "POST",
        "/api/v1/verification/resend",
        summary="Email a new verification code",
        tag=TAG,
        body=EmailAddress,
        response=Accepted,
        status=202,
        auth=False,
    )
    async def resend_verification(call: Call) -> Accepted:
        body: EmailAddress = call.body
        await accounts.resend_verification(p, call.caller, body.email)
        return Accepted(SENT)

    @api.endpoint(
        "POST",
        "/api/v1/sessions",
        summary="Log in: a session, or a ticket when MFA is on",
        tag=TAG,
        body=Credentials,
        response=Login,
        auth=False,
    )
    async def create_session(call: Call) -> Login:
        body: Credentials = call.body
        return _login(await accounts.login(p, call.caller, body.email, body.password))

    @api.endpoint(
        "POST",
        "/api/v1/sessions/mfa",
        summary="Finish a login with a TOTP or recovery code",
        tag=TAG,
        body=MfaAnswer,
        response=Login,
        auth=False,
    )
    async def create_session_with_code(call: Call) -> Login:
        body: MfaAnswer = call.body
        return _login(await accounts.login_with_code(p, call.caller, body.ticket, body.code))

    @api.endpoint("DELETE", "/api/v1/sessions/current", summary="Log out", tag=TAG)
    async def delete_current_session(call: Call) -> None:
        if call.session_id is None:
            raise Unauthenticated("log in first")
        await accounts.logout(p, call.caller, call.session_id)

    @api.endpoint(
        "PUT",
        "/api/v1/users/me/password",
        summary="Change my password (other sessions end)",
        tag=TAG,
        body=PasswordChange,
    )
    async def change_password(call: Call) -> None:
        body: PasswordChange = call.body
        await accounts.change_password(
            p, call.caller, call.session_id, body.current_password, body.new_password
        )

    @api.endpoint(
        "POST",
        "/api/v1/password-resets",
        summary="Email a password reset code",
        tag=TAG,
        body=EmailAddress,
        response=Accepted,
        status=202,
        auth=False,
    )
    async def request_password_reset(call: Call) -> Accepted:
        body: EmailAddress = call.body
        await accounts.request_password_reset(p, call.caller, body.email)
        return Accepted(SENT)

    @api.endpoint(
        "POST",
        "/api/v1/password-resets/complete",
        summary="Set a new password with a reset code (every session ends)",
        tag=TAG,
        body=PasswordReset,
        auth=False,
    )
    async def complete_password_reset(call: Call) -> None:
        body: PasswordReset = call.body
        await accounts.complete_password_reset(p, call.caller, body.code, body.new_password)

    @api.endpoint(
        "POST",
        "/api/v1/users/me/mfa",
        summary="Start a TOTP enrolment",
        tag=TAG,
        body=PasswordCheck,
        response=MfaSetup,
        status=201,
    )
    async def enrol_mfa(call: Call) -> MfaSetup:
        body: PasswordCheck = call.body
        setup = await accounts.enrol_mfa(p, call.caller, body.password)
        return MfaSetup(secret=setup.secret, uri=setup.uri)

    @api.endpoint(
        "POST",
        "/api/v1/users/me/mfa/confirm",
        summary="Confirm the TOTP enrolment; returns recovery codes once",
        tag=TAG,
        body=MfaCode,
        response=RecoveryCodes,
    )
    async def confirm_mfa(call: Call) -> RecoveryCodes:
        body: MfaCode = call.body
        return RecoveryCodes(list(await accounts.confirm_mfa(p, call.caller, body.code)))

    @api.endpoint(
        "GET", "/api/v1/users/me/mfa", summary="My MFA status", tag=TAG, response=MfaStatus
    )
    async def get_mfa(call: Call) -> MfaStatus:
        status = await accounts.mfa_status(p, call.caller)
        return MfaStatus(
            enrolled=status.enrolled,
            active=status.active,
            recovery_codes_left=status.recovery_codes_left,
            confirmed_at=status.confirmed_at,
        )

    @api.endpoint(
        "POST",
        "/api/v1/users/me/mfa/recovery-codes",
        summary="Replace my recovery codes (needs a code)",
        tag=TAG,
        body=MfaCode,
        response=RecoveryCodes,
    )
    async def regenerate_recovery_codes(call: Call) -> RecoveryCodes:
        body: MfaCode = call.body
        codes = await accounts.regenerate_recovery_codes(p, call.caller, body.code)
        return RecoveryCodes(list(codes))

    @api.endpoint(
        "DELETE",
        "/api/v1/users/me/mfa",
        summary="Turn MFA off (needs the password and a code)",
        tag=TAG,
        body=MfaRemoval,
    )
    async def remove_mfa(call: Call) -> None:
        body: MfaRemoval = call.body
        await accounts.remove_mfa(p, call.caller, body.password, body.code)
