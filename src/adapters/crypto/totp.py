"""TOTP (RFC 6238) through pyotp: SHA-1, 6 digits, 30-second steps, one step of drift."""

from __future__ import annotations

from datetime import datetime

import pyotp

ISSUER = "Opsicle"
STEP_SECONDS = 30


class PyotpTotp:
    """The Totp port."""

    def new_secret(self) -> str:
        return pyotp.random_base32()

    def provisioning_uri(self, secret: str, account: str) -> str:
        return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=ISSUER)

    def matching_step(self, secret: str, code: str, at: datetime) -> int | None:
        code = code.strip().replace(" ", "")
        if len(code) != 6 or not code.isdigit():
            return None
        totp = pyotp.TOTP(secret)
        step = int(at.timestamp()) // STEP_SECONDS
        for candidate in (step, step - 1, step + 1):
            if pyotp.utils.strings_equal(totp.at(candidate * STEP_SECONDS), code):
                return candidate
        return None
