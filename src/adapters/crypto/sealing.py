"""Sealing with Fernet (AES-128-CBC + HMAC-SHA256) from ``cryptography``."""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken

from domain.errors import FieldError, Invalid


class FernetSealer:
    """The Sealer port; the key is 32 bytes (derived from the server's secret key)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("a sealing key is exactly 32 bytes")
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def seal(self, plain: bytes) -> str:
        return self._fernet.encrypt(plain).decode()

    def open(self, sealed: str) -> bytes:
        try:
            return self._fernet.decrypt(sealed.encode())
        except (InvalidToken, ValueError) as exc:
            raise Invalid(
                "a sealed value cannot be opened",
                errors=(
                    FieldError("sealed", "was not sealed with this server's key, or was altered"),
                ),
            ) from exc
