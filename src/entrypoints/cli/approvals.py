"""Approval commands: the approver's grant keys, approval requests, org policies and settings."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

from cyclopts import Parameter

from entrypoints.cli import verbs
from entrypoints.cli.client import current, say, show

if TYPE_CHECKING:
    from adapters.crypto.grants import FileGrantKeyStore

DataDir = Annotated[
    str | None,
    Parameter(help="The server's data directory. Default: ~/.local/share/opsicle"),
]


def _key_store(data_dir: str | None) -> FileGrantKeyStore:
    from adapters.crypto.grants import FileGrantKeyStore
    from adapters.crypto.sealing import FernetSealer
    from entrypoints.bootstrap import derive_key, master_key

    resolved = current().with_flags(data_dir=data_dir)
    sealer = FernetSealer(derive_key(master_key(resolved), "sealed values"))
    return FileGrantKeyStore(resolved.data_dir / "approver-keys", sealer)


def _print_keys(data_dir: str | None, rotate: bool) -> int:
    from adapters.crypto.grants import public_pem

    store = _key_store(data_dir)
    now = datetime.now(UTC)
    ring = store.rotate(now) if rotate else store.ring(now)
    keys = sorted(ring.keys, key=lambda k: (k.retired_at is None, k.created_at))
    if current()["output"] == "text":
        for key in keys:
            state = "current" if key.key_id == ring.key_id else f"retired {key.retired_at}"
            say(f"# key {key.key_id} ({state})")
            print(public_pem(key.public), end="")
    else:
        show(
            [
                {
                    "keyId": k.key_id,
                    "current": k.key_id == ring.key_id,
                    "retiredAt": k.retired_at.isoformat() if k.retired_at else None,
                    "publicKey": public_pem(k.public),
                }
                for k in keys
            ]
        )
    return 0


@verbs.get.command(name="approver-key")
def get_approver_key(*, data_dir: DataDir = None) -> int:
    """Print the approver's public keys (PEM), current key last, for workers to pin with
    'opsicle start worker --approver-key FILE'. Retired keys are listed while grants they
    signed may still be valid. Run it where the server's data directory is; the key is
    generated on first use."""
    return _print_keys(data_dir, rotate=False)


@verbs.rotate.command(name="approver-key")
def rotate_approver_key(*, data_dir: DataDir = None) -> int:
    """Generate a new signing key for approval grants and retire the current one; grants the
    old key signed still verify until they expire. Restart the server to sign with the new key,
    and pin the new public key (printed) on workers."""
    return _print_keys(data_dir, rotate=True)
