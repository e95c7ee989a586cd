"""The SDK for the account endpoints: registration, sessions, passwords and MFA."""

from __future__ import annotations

from typing import cast

from adapters.http.controller_client import ControllerClient
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

API = "/api/v1"


class AccountsClient:
    """Typed calls to the controller's account endpoints; errors arrive as domain errors."""

    def __init__(self, client: ControllerClient) -> None:
        self.client = client

    async def register(self, email: str, password: str) -> Account:
        return cast(
            Account,
            await self.client.call(
                "POST", f"{API}/users", body=Registration(email, password), response=Account
            ),
        )

    async def me(self) -> Account:
        return cast(Account, await self.client.call("GET", f"{API}/users/me", response=Account))

    async def whoami(self) -> WhoAmI:
        return cast(WhoAmI, await self.client.call("GET", f"{API}/whoami", response=WhoAmI))

    async def verify_email(self, code: str) -> Account:
        return cast(
            Account,
            await self.client.call(
                "POST", f"{API}/verification", body=VerificationCode(code), response=Account
            ),
        )

    async def resend_verification(self, email: str) -> Accepted:
        return cast(
            Accepted,
            await self.client.call(
                "POST", f"{API}/verification/resend", body=EmailAddress(email), response=Accepted
            ),
        )

    async def login(self, email: str, password: str) -> Login:
        """A session, or (``mfa_required``) a ticket to pass to ``login_with_code``."""
        return cast(
            Login,
            await self.client.call(
                "POST", f"{API}/sessions", body=Credentials(email, password), response=Login
            ),
        )

    async def login_with_code(self, ticket: str, code: str) -> Login:
        return cast(
            Login,
            await self.client.call(
                "POST", f"{API}/sessions/mfa", body=MfaAnswer(ticket, code), response=Login
            ),
        )

    async def logout(self) -> None:
        await self.client.call("DELETE", f"{API}/sessions/current")

    async def change_password(self, current_password: str, new_password: str) -> None:
        await self.client.call(
            "PUT", f"{API}/users/me/password", body=PasswordChange(current_password, new_password)
        )

    async def request_password_reset(self, email: str) -> Accepted:
        return cast(
            Accepted,
            await self.client.call(
                "POST", f"{API}/password-resets", body=EmailAddress(email), response=Accepted
            ),
        )

    async def complete_password_reset(self, code: str, new_password: str) -> None:
        await self.client.call(
            "POST", f"{API}/password-resets/complete", body=PasswordReset(code, new_password)
        )

    async def enrol_mfa(self, password: str) -> MfaSetup:
        return cast(
            MfaSetup,
            await self.client.call(
                "POST", f"{API}/users/me/mfa", body=PasswordCheck(password), response=MfaSetup
            ),
        )

    async def confirm_mfa(self, code: str) -> RecoveryCodes:
        return cast(
            RecoveryCodes,
            await self.client.call(
                "POST", f"{API}/users/me/mfa/confirm", body=MfaCode(code), response=RecoveryCodes
            ),
        )

    async def mfa_status(self) -> MfaStatus:
        return cast(
            MfaStatus, await self.client.call("GET", f"{API}/users/me/mfa", response=MfaStatus)
        )

    async def regenerate_recovery_codes(self, code: str) -> RecoveryCodes:
        return cast(
            RecoveryCodes,
            await self.client.call(
                "POST",
                f"{API}/users/me/mfa/recovery-codes",
                body=MfaCode(code),
                response=RecoveryCodes,
            ),
        )

    async def remove_mfa(self, password: str, code: str) -> None:
        await self.client.call("DELETE", f"{API}/users/me/mfa", body=MfaRemoval(password, code))
