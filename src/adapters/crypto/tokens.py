"""Signed session tokens: HS256 JWTs (PyJWT) with issuer, issue and expiry times."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jwt

from domain.errors import Unauthenticated
from domain.ports import Clock

ISSUER = "opsicle"
ALGORITHM = "HS256"
# RFC 7518 §3.2: an HS256 key must be at least as long as the hash output.
MIN_SECRET_BYTES = 32
_RESERVED = frozenset({"iat", "exp", "iss"})


class JwtTokenSigner:
    """Signs claims with a shared secret; ``verify`` returns them or raises ``Unauthenticated``.

    Expiry is judged by the injected clock rather than PyJWT's own ``time.time()`` so a
    ``FakeClock`` can expire tokens in tests and every role agrees on one notion of now.
    """

    def __init__(self, secret: str | bytes, clock: Clock, *, issuer: str = ISSUER,
                 leeway_seconds: int = 0) -> None:
        key = secret.encode() if isinstance(secret, str) else secret
        if len(key) < MIN_SECRET_BYTES:
            raise ValueError(f"the token signing secret must be at least {MIN_SECRET_BYTES} bytes")
        self._key = key
        self._clock = clock
        self._issuer = issuer
        self._leeway = leeway_seconds

    def sign(self, claims: Mapping[str, Any], ttl_seconds: int) -> str:
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        clashes = _RESERVED & claims.keys()
        if clashes:
            raise ValueError(f"claims {sorted(clashes)} are set by the signer")
        issued = int(self._clock.now().timestamp())
        payload = {**claims, "iss": self._issuer, "iat": issued, "exp": issued + ttl_seconds}
        return jwt.encode(payload, self._key, algorithm=ALGORITHM)

    def verify(self, token: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self._key, algorithms=[ALGORITHM], issuer=self._issuer,
                options={"require": ["exp", "iat", "iss"], "verify_exp": False,
                         "verify_iat": False, "verify_nbf": False},
            )
        except jwt.InvalidSignatureError as exc:
            raise Unauthenticated("token signature is invalid") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"token lacks the '{exc.claim}' claim") from exc
        except jwt.InvalidIssuerError as exc:
            raise Unauthenticated(f"token was not issued by {self._issuer}") from exc
        except jwt.InvalidAlgorithmError as exc:
            raise Unauthenticated(f"token is not signed with {ALGORITHM}") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated("token is malformed") from exc
        exp, iat = claims["exp"], claims["iat"]
        if not _is_number(exp) or not _is_number(iat):
            raise Unauthenticated("token is malformed: 'iat' and 'exp' must be numbers")
        now = self._clock.now().timestamp()
        if now >= exp + self._leeway:
            raise Unauthenticated("token has expired")
        if iat > now + self._leeway:
            raise Unauthenticated("token is issued in the future")
        return claims


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
