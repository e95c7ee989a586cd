"""Random secrets and codes, constant-time comparison, and SHA-256 hashes for storing them."""

from __future__ import annotations

import hashlib
import hmac
import secrets

SECRET_HEX_CHARS = 56


def new_secret(prefix: str = "opsicle-") -> str:
    """``prefix`` and 56 lowercase hex characters (224 random bits): a worker token, say.

    The prefix lets secret scanners and people recognise a leaked Opsicle token.
    """
    return prefix + secrets.token_hex(SECRET_HEX_CHARS // 2)


def new_code(digits: int = 6) -> str:
    """A uniformly random decimal code of exactly ``digits`` digits (leading zeros kept)."""
    if digits < 1:
        raise ValueError("a code has at least one digit")
    return f"{secrets.randbelow(10**digits):0{digits}d}"


def constant_time_equals(a: str, b: str) -> bool:
    """Compare secrets without leaking, through timing, how much of them matched."""
    # Bytes, because compare_digest rejects non-ASCII str rather than answering False.
    return hmac.compare_digest(a.encode(), b.encode())


def hash_secret(secret: str) -> str:
    """The SHA-256 hex digest under which a token or single-use code is stored.

    A fast hash is right here, unlike for passwords: a token from ``new_secret`` carries 224
    random bits, so nobody can search that space whatever the hash costs, and a
    deterministic digest lets a store look the token up by its hash. Short numeric codes
    are a different matter (a million six-digit codes hash in well under a second), so
    their protection is their short life, single use and attempt limits, not this hash.
    """
    return hashlib.sha256(secret.encode()).hexdigest()


def verify_secret(hashed: str, secret: str) -> bool:
    """True when ``secret`` hashes to ``hashed``; False (never an error) for a malformed hash."""
    return constant_time_equals(hash_secret(secret), hashed)


class KeyedSecrets:
    """The Secrets port: random secrets and codes, stored as HMAC-SHA256 under a server key.

    The key means a leaked table of short codes cannot be searched without the key too.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the secrets key needs at least 32 bytes")
        self._key = key

    def new_token(self, prefix: str = "opsicle-") -> str:
        return new_secret(prefix)

    def new_code(self, digits: int) -> str:
        return new_code(digits)

    def hash(self, secret: str) -> str:
        return hmac.new(self._key, secret.encode(), hashlib.sha256).hexdigest()
