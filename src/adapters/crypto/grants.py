"""Ed25519 grant signing (``cryptography``): a key ring that rotates, and pinned-key checks.

The current key signs; retired keys keep verifying the grants they signed before they were
retired until those grants expire (``check_grant`` judges expiry), then they are dropped.
Private keys are stored sealed with the server's Sealer; public keys are exported as PEM
(or raw base64) for pinning on workers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from domain.errors import Conflict, FieldError, Invalid
from domain.grants import (
    DEFAULT_GRANT_TTL,
    Grant,
    GrantRefused,
    SignedGrant,
    StoredGrantKey,
    encode_grant,
)
from domain.ports import GrantKeyRepository, Sealer

log = logging.getLogger("opsicle.approver_keys")


def public_raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_of(key: Ed25519PublicKey) -> str:
    """A short, stable id: the first 16 hex digits of SHA-256 of the raw public key."""
    return hashlib.sha256(public_raw(key)).hexdigest()[:16]


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def public_b64(key: Ed25519PublicKey) -> str:
    return base64.b64encode(public_raw(key)).decode()


def load_public_key(text: str, *, source: str = "approver-key") -> Ed25519PublicKey:
    """A pinned key from PEM (SubjectPublicKeyInfo) or base64 of the 32 raw bytes."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
            if isinstance(key, Ed25519PublicKey):
                return key
        else:
            raw = base64.b64decode(text, validate=True)
            if len(raw) == 32:
                return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, binascii.Error):
        pass
    raise Invalid(
        "the approver key is not an Ed25519 public key",
        errors=(FieldError(source, "expected a PEM public key or base64 of 32 raw bytes"),),
    )


@attrs.frozen
class GrantKey:
    """One key of the ring: ``private`` is None for a key known only by its public half."""

    key_id: str
    public: Ed25519PublicKey
    created_at: datetime
    private: Ed25519PrivateKey | None = None
    retired_at: datetime | None = None

    @classmethod
    def generate(cls, at: datetime) -> GrantKey:
        private = Ed25519PrivateKey.generate()
        return cls(key_id_of(private.public_key()), private.public_key(), at, private)


def _verify(keys: dict[str, GrantKey], signed: SignedGrant) -> Grant:
    grant = signed.grant
    key = keys.get(grant.key_id)
    if key is None:
        raise GrantRefused(f"unknown key {grant.key_id}: it is not among the pinned keys")
    if key.retired_at is not None and grant.issued_at > key.retired_at:
        raise GrantRefused(f"the grant is dated after its key {grant.key_id} was retired")
    try:
        key.public.verify(signed.signature, encode_grant(grant))
    except InvalidSignature:
        raise GrantRefused("the signature does not verify: the grant was altered") from None
    return grant


class Ed25519GrantVerifier:
    """The GrantVerifier port over public keys pinned at install."""

    def __init__(self, keys: Iterable[Ed25519PublicKey]) -> None:
        self._keys = {
            key_id_of(k): GrantKey(key_id_of(k), k, datetime.min.replace(tzinfo=UTC)) for k in keys
        }

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._keys))

    def verify(self, signed: SignedGrant) -> Grant:
        return _verify(self._keys, signed)


class Ed25519KeyRing:
    """GrantSigner and GrantVerifier: the current key signs, retired keys still verify."""

    def __init__(self, keys: Sequence[GrantKey]) -> None:
        current = [k for k in keys if k.retired_at is None and k.private is not None]
        if len(current) != 1:
            raise ValueError("a key ring has exactly one current key with its private half")
        self._current = current[0]
        self._keys = {k.key_id: k for k in keys}

    @property
    def key_id(self) -> str:
        return self._current.key_id

    @property
    def keys(self) -> tuple[GrantKey, ...]:
        return tuple(self._keys.values())

    @property
    def current(self) -> GrantKey:
        return self._current

    def sign(self, grant: Grant) -> SignedGrant:
        assert self._current.private is not None
        grant = attrs.evolve(grant, key_id=self._current.key_id)
        return SignedGrant(grant, self._current.private.sign(encode_grant(grant)))

    def verify(self, signed: SignedGrant) -> Grant:
        return _verify(self._keys, signed)

    def verifier(self) -> Ed25519GrantVerifier:
        """A verifier of this ring's public keys only (what a worker pins)."""
        return Ed25519GrantVerifier(k.public for k in self._keys.values())


def rotate(
    keys: Sequence[GrantKey], at: datetime, grant_ttl: timedelta = DEFAULT_GRANT_TTL
) -> list[GrantKey]:
    """A new current key; the old one retired at ``at``; keys retired longer ago than
    ``grant_ttl`` dropped, since every grant they signed has expired."""
    kept = [
        k if k.retired_at is not None or k.private is None else attrs.evolve(k, retired_at=at)
        for k in keys
        if k.retired_at is None or k.retired_at + grant_ttl > at
    ]
    return [*kept, GrantKey.generate(at)]


# ------------------------------------------------------------------ storage


def key_record(key: GrantKey, sealer: Sealer) -> dict[str, str | None]:
    """The stored form: public key in base64, private key sealed, times in ISO 8601."""
    private = (
        sealer.seal(
            key.private.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
        )
        if key.private is not None
        else None
    )
    return {
        "keyId": key.key_id,
        "public": public_b64(key.public),
        "private": private,
        "createdAt": key.created_at.isoformat(),
        "retiredAt": key.retired_at.isoformat() if key.retired_at else None,
    }


def key_from_record(record: dict[str, str | None], sealer: Sealer) -> GrantKey:
    """Raises ``Invalid`` when the record is damaged or sealed with another server key."""
    try:
        public = load_public_key(str(record["public"]))
        sealed = record.get("private")
        private = Ed25519PrivateKey.from_private_bytes(sealer.open(sealed)) if sealed else None
        retired = record.get("retiredAt")
        key = GrantKey(
            key_id=str(record["keyId"]),
            public=public,
            created_at=datetime.fromisoformat(str(record["createdAt"])),
            private=private,
            retired_at=datetime.fromisoformat(retired) if retired else None,
        )
    except (KeyError, ValueError) as exc:
        raise Invalid(f"the approver key record is damaged: {exc}") from exc
    if key.key_id != key_id_of(public) or (
        private is not None and public_raw(private.public_key()) != public_raw(public)
    ):
        raise Invalid(f"the approver key record {key.key_id} does not match its keys")
    return key


class FileGrantKeyStore:
    """Keys as JSON files (mode 0600) in a directory (mode 0700) of the data directory.

    Where releases before the SQL key ring kept the keys: ``StoredKeyRing`` imports them once
    into an empty store. The private halves are sealed, so the files are as safe as the
    server's secret key.
    """

    def __init__(self, directory: Path, sealer: Sealer) -> None:
        self._dir = directory
        self._sealer = sealer

    def load(self) -> list[GrantKey]:
        if not self._dir.is_dir():
            return []
        keys = []
        for path in sorted(self._dir.glob("*.json")):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise Invalid(f"the approver key file {path} cannot be read: {exc}") from exc
            keys.append(key_from_record(record, self._sealer))
        return keys

    def save(self, keys: Sequence[GrantKey]) -> None:
        """Write every key, then remove the files of keys no longer in ``keys``."""
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        wanted = set()
        for key in keys:
            path = self._dir / f"{key.key_id}.json"
            wanted.add(path.name)
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(key_record(key, self._sealer), f, sort_keys=True)
            os.replace(tmp, path)
        for path in self._dir.glob("*.json"):
            if path.name not in wanted:
                path.unlink()

    def ring(self, at: datetime) -> Ed25519KeyRing:
        """The stored ring; on first use a new key is generated and stored."""
        keys = self.load()
        if not keys:
            keys = [GrantKey.generate(at)]
            self.save(keys)
        return Ed25519KeyRing(keys)

    def rotate(self, at: datetime, grant_ttl: timedelta = DEFAULT_GRANT_TTL) -> Ed25519KeyRing:
        keys = rotate(self.load(), at, grant_ttl)
        self.save(keys)
        return Ed25519KeyRing(keys)


def stored_key(
    key: GrantKey, sealer: Sealer, grant_ttl: timedelta = DEFAULT_GRANT_TTL
) -> StoredGrantKey:
    """``key`` as the store keeps it; a retired key may be dropped ``grant_ttl`` after."""
    record = key_record(key, sealer)
    return StoredGrantKey(
        key_id=key.key_id,
        public_key=str(record["public"]),
        sealed_private=record["private"],
        created_at=key.created_at,
        retired_at=key.retired_at,
        expires_at=key.retired_at + grant_ttl if key.retired_at else None,
    )


def key_from_stored(stored: StoredGrantKey, sealer: Sealer) -> GrantKey:
    """Raises ``Invalid`` when the stored key is damaged or sealed with another server key."""
    return key_from_record(
        {
            "keyId": stored.key_id,
            "public": stored.public_key,
            "private": stored.sealed_private,
            "createdAt": stored.created_at.isoformat(),
            "retiredAt": stored.retired_at.isoformat() if stored.retired_at else None,
        },
        sealer,
    )


ROTATE_ATTEMPTS = 5


class StoredKeyRing:
    """The approver's key ring in the platform's store, shared by every process on it.

    ``ring`` reads the store on every call (signing is rare next to a query of a few rows),
    so a key rotated by any process signs the next grant everywhere. ``verify`` uses the ring
    this process read last, which is enough for the standalone's embedded worker: it only
    sees grants this process signed.
    """

    def __init__(
        self,
        keys: GrantKeyRepository,
        sealer: Sealer,
        *,
        legacy_dir: Path | None = None,
        grant_ttl: timedelta = DEFAULT_GRANT_TTL,
    ) -> None:
        self._keys = keys
        self._sealer = sealer
        self._legacy_dir = legacy_dir
        self._ttl = grant_ttl
        self._last: Ed25519KeyRing | None = None

    async def ring(self, at: datetime) -> Ed25519KeyRing:
        """The stored ring; when the store has none, the key files of an older release
        (``legacy_dir``) or else a new key become its first keys."""
        stored = await self._keys.keys()
        if not stored:
            stored = await self._first(at)
        return self._loaded(stored, at)

    async def rotate(self, at: datetime) -> Ed25519KeyRing:
        """A new current key; the old one retired at ``at`` and verifying until its grants
        expire. Raises ``Conflict`` when other processes kept rotating first."""
        for _ in range(ROTATE_ATTEMPTS):
            ring = await self.ring(at)
            new = stored_key(GrantKey.generate(at), self._sealer)
            rotated = await self._keys.rotate(
                ring.key_id, new, at=at, expires_at=at + self._ttl
            )
            if rotated is not None:
                return self._loaded(rotated, at)
        raise Conflict("the approver key ring kept changing while rotating it: try again")

    def verify(self, signed: SignedGrant) -> Grant:
        if self._last is None:
            raise GrantRefused("no approver key has been loaded in this process yet")
        return self._last.verify(signed)

    async def _first(self, at: datetime) -> list[StoredGrantKey]:
        files = FileGrantKeyStore(self._legacy_dir, self._sealer) if self._legacy_dir else None
        old = files.load() if files else []
        if not any(k.retired_at is None and k.private is not None for k in old):
            old = []
        first = [stored_key(k, self._sealer, self._ttl) for k in old] or [
            stored_key(GrantKey.generate(at), self._sealer)
        ]
        stored = await self._keys.add_first(first)
        if old and {k.key_id for k in stored} == {k.key_id for k in old}:
            log.info(
                "imported %d approver key(s) from %s into the store; the files are left as "
                "they were and are no longer read",
                len(old),
                self._legacy_dir,
            )
        return stored

    def _loaded(self, stored: Sequence[StoredGrantKey], at: datetime) -> Ed25519KeyRing:
        try:
            keys = [
                key_from_stored(k, self._sealer)
                for k in stored
                if k.expires_at is None or k.expires_at > at
            ]
        except Invalid:
            raise Invalid(
                "the approver signing keys in the database were sealed with another secret "
                "key: every process on one database needs the same secret key "
                "(OPSICLE_SECRET_KEY or secret-key in the config file)",
                code="secret_key_mismatch",
            ) from None
        ring = Ed25519KeyRing(keys)
        self._last = ring
        return ring
