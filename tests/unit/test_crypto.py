"""Password hashing, token signing and secret helpers."""

from __future__ import annotations

import base64
import json
import re
from datetime import timedelta

import jwt
import pytest

from adapters.crypto.passwords import Argon2PasswordHasher
from adapters.crypto.secrets import (
    constant_time_equals,
    hash_secret,
    new_code,
    new_secret,
    verify_secret,
)
from adapters.crypto.tokens import JwtTokenSigner
from adapters.memory.clock import FakeClock
from domain.errors import Unauthenticated
from domain.ports import PasswordHasher, TokenSigner

SECRET = "0123456789abcdef0123456789abcdef-test-only"


@pytest.fixture
def hasher() -> PasswordHasher:
    # Cheap parameters: the algorithm and its checks are what is under test, not the cost.
    return Argon2PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def signer(clock: FakeClock) -> TokenSigner:
    return JwtTokenSigner(SECRET, clock)


def test_password_hash_is_argon2id_and_verifies(hasher: PasswordHasher) -> None:
    hashed = hasher.hash("correct horse battery staple")
    assert hashed.startswith("$argon2id$")
    assert hasher.verify(hashed, "correct horse battery staple")


def test_same_password_hashes_differently_each_time(hasher: PasswordHasher) -> None:
    assert hasher.hash("pw") != hasher.hash("pw")


def test_wrong_password_is_false(hasher: PasswordHasher) -> None:
    assert not hasher.verify(hasher.hash("right"), "wrong")


@pytest.mark.parametrize("hashed", ["", "not-a-hash", "$argon2id$v=19$m=garbage",
                                    "$2b$12$abcdefghijklmnopqrstuv", "\x00"])
def test_malformed_hash_is_false_not_an_error(hasher: PasswordHasher, hashed: str) -> None:
    assert not hasher.verify(hashed, "anything")


def test_weaker_parameters_need_rehash() -> None:
    weak = Argon2PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    strong = Argon2PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    assert strong.needs_rehash(weak.hash("pw"))
    assert not weak.needs_rehash(weak.hash("pw"))
    assert strong.needs_rehash("garbage")


def test_token_round_trips_claims_with_iss_iat_exp(signer: TokenSigner, clock: FakeClock) -> None:
    token = signer.sign({"sub": "user-1", "sid": "s-9"}, ttl_seconds=600)
    claims = signer.verify(token)
    issued = int(clock.now().timestamp())
    assert claims == {"sub": "user-1", "sid": "s-9", "iss": "opsicle", "iat": issued,
                      "exp": issued + 600}


def test_token_expires_after_ttl(signer: TokenSigner, clock: FakeClock) -> None:
    token = signer.sign({"sub": "u"}, ttl_seconds=60)
    clock.advance(59)
    assert signer.verify(token)["sub"] == "u"
    clock.advance(1)
    with pytest.raises(Unauthenticated, match="expired"):
        signer.verify(token)


def test_token_signed_in_the_past_is_expired(clock: FakeClock) -> None:
    past = FakeClock(clock.now() - timedelta(hours=2))
    old = JwtTokenSigner(SECRET, past).sign({"sub": "u"}, ttl_seconds=3600)
    with pytest.raises(Unauthenticated, match="expired"):
        JwtTokenSigner(SECRET, clock).verify(old)


def test_token_from_the_future_is_rejected(clock: FakeClock) -> None:
    future = FakeClock(clock.now() + timedelta(hours=1))
    token = JwtTokenSigner(SECRET, future).sign({"sub": "u"}, ttl_seconds=7200)
    with pytest.raises(Unauthenticated, match="future"):
        JwtTokenSigner(SECRET, clock).verify(token)


def _reencode_payload(token: str, **changes: object) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def test_tampered_token_has_a_bad_signature(signer: TokenSigner) -> None:
    token = signer.sign({"sub": "user-1", "admin": False}, ttl_seconds=60)
    with pytest.raises(Unauthenticated, match="signature"):
        signer.verify(_reencode_payload(token, admin=True))


def test_token_signed_with_another_secret_is_rejected(signer: TokenSigner,
                                                      clock: FakeClock) -> None:
    other = JwtTokenSigner("another-secret-that-is-long-enough-000", clock)
    with pytest.raises(Unauthenticated, match="signature"):
        signer.verify(other.sign({"sub": "u"}, ttl_seconds=60))


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "a.b", "ey.ey.ey"])
def test_malformed_token_is_unauthenticated(signer: TokenSigner, token: str) -> None:
    with pytest.raises(Unauthenticated, match="malformed"):
        signer.verify(token)


def test_unsigned_token_is_rejected(signer: TokenSigner, clock: FakeClock) -> None:
    now = int(clock.now().timestamp())
    token = jwt.encode({"sub": "u", "iss": "opsicle", "iat": now, "exp": now + 60}, "",
                       algorithm="none")
    with pytest.raises(Unauthenticated):
        signer.verify(token)


def test_token_from_another_issuer_is_rejected(signer: TokenSigner, clock: FakeClock) -> None:
    now = int(clock.now().timestamp())
    token = jwt.encode({"sub": "u", "iss": "someone-else", "iat": now, "exp": now + 60},
                       SECRET, algorithm="HS256")
    with pytest.raises(Unauthenticated, match="not issued by opsicle"):
        signer.verify(token)


def test_token_without_expiry_is_rejected(signer: TokenSigner, clock: FakeClock) -> None:
    now = int(clock.now().timestamp())
    token = jwt.encode({"sub": "u", "iss": "opsicle", "iat": now}, SECRET, algorithm="HS256")
    with pytest.raises(Unauthenticated, match="'exp'"):
        signer.verify(token)


def test_signer_refuses_short_secret_and_reserved_claims(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        JwtTokenSigner("short", clock)
    with pytest.raises(ValueError, match="set by the signer"):
        JwtTokenSigner(SECRET, clock).sign({"exp": 1}, ttl_seconds=60)


def test_new_secret_is_prefix_and_56_hex_chars() -> None:
    secret = new_secret()
    assert re.fullmatch(r"opsicle-[0-9a-f]{56}", secret)
    assert re.fullmatch(r"wt_[0-9a-f]{56}", new_secret("wt_"))
    assert len({new_secret() for _ in range(100)}) == 100


@pytest.mark.parametrize("digits", [1, 6, 8])
def test_new_code_has_exactly_the_digits(digits: int) -> None:
    for _ in range(200):
        assert re.fullmatch(rf"[0-9]{{{digits}}}", new_code(digits))


def test_new_code_needs_a_digit() -> None:
    with pytest.raises(ValueError, match="at least one digit"):
        new_code(0)


def test_constant_time_equals() -> None:
    assert constant_time_equals("abc", "abc")
    assert not constant_time_equals("abc", "abd")
    assert not constant_time_equals("abc", "abcd")
    assert not constant_time_equals("é", "e")


def test_secret_hash_verifies_and_hides_the_secret() -> None:
    secret = new_secret()
    hashed = hash_secret(secret)
    assert re.fullmatch(r"[0-9a-f]{64}", hashed)
    assert secret not in hashed
    assert hash_secret(secret) == hashed  # deterministic, so a store can look it up
    assert verify_secret(hashed, secret)
    assert not verify_secret(hashed, new_secret())


@pytest.mark.parametrize("hashed", ["", "zz", "é" * 64, "sha256:abc"])
def test_malformed_secret_hash_is_false(hashed: str) -> None:
    assert not verify_secret(hashed, "opsicle-abc")
