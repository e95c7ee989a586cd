"""Signed grants: canonical bytes, Ed25519 signatures, tampering, expiry and key rotation."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.crypto.grants import (
    Ed25519GrantVerifier,
    Ed25519KeyRing,
    FileGrantKeyStore,
    GrantKey,
    key_id_of,
    load_public_key,
    public_b64,
    public_pem,
    rotate,
)
from adapters.crypto.sealing import FernetSealer
from domain.automations import Run, RunStatus
from domain.errors import Invalid
from domain.grants import (
    Grant,
    GrantRefused,
    SignedGrant,
    check_grant,
    decode_grant,
    decode_signed,
    encode_grant,
    encode_signed,
    grant_for,
)
from domain.resources import AutomationSpec, Phase

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = AutomationSpec(phases=(Phase("deploy", "busybox", ("echo $TARGET", "true")),))
ENV = {"TARGET": "prod", "PASSWORD": "hunter2"}


def a_run(**changes: Any) -> Run:
    run = Run(
        id="run-1",
        spec=SPEC,
        status=RunStatus.QUEUED,
        created_at=T0,
        template_id="tpl-1",
        template_version=3,
        variables={"target": "prod", "password": "***"},
    )
    return attrs.evolve(run, **changes)


def a_grant(run: Run | None = None, ttl: timedelta = timedelta(hours=24)) -> Grant:
    return grant_for(
        run or a_run(), ENV, ["bob", "alice", "bob"], approval_id="ap-1", key_id="k", at=T0, ttl=ttl
    )


times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
text = st.text(max_size=20)
hexes = st.text("0123456789abcdef", min_size=64, max_size=64)
grants = st.builds(
    Grant,
    run_id=text,
    template_id=st.none() | text,
    template_version=st.none() | st.integers(min_value=0, max_value=2**40),
    content_sha256=hexes,
    variables_sha256=hexes,
    approver_ids=st.lists(text, max_size=4).map(tuple),
    approval_id=text,
    issued_at=times,
    expires_at=times,
    key_id=text,
)


@given(grants)
def test_canonical_encoding_round_trips(grant: Grant) -> None:
    data = encode_grant(grant)
    assert decode_grant(data) == grant
    assert encode_grant(decode_grant(data)) == data


@given(grants, st.binary(min_size=64, max_size=64))
def test_wire_form_round_trips(grant: Grant, signature: bytes) -> None:
    signed = SignedGrant(grant, signature)
    assert decode_signed(encode_signed(signed)) == signed


def test_canonical_encoding_is_sorted_compact_json() -> None:
    data = encode_grant(a_grant())
    assert data.startswith(b'{"approval":"ap-1","approvers":["alice","bob"],"content":"')
    assert b" " not in data


def test_non_canonical_payloads_are_refused() -> None:
    data = encode_grant(a_grant())
    with pytest.raises(Invalid, match="canonical"):
        decode_grant(data.replace(b",", b", ", 1))
    with pytest.raises(Invalid, match="malformed"):
        decode_signed("not a grant")


def test_a_grant_matches_the_run_it_was_issued_for() -> None:
    grant = a_grant()
    check_grant(grant, a_run(), ENV, T0 + timedelta(hours=1))
    assert grant.expires_at == T0 + timedelta(hours=24)


@pytest.mark.parametrize(
    ("run", "env", "reason"),
    [
        (a_run(id="run-2"), ENV, "it is for run run-1, not run-2"),
        (a_run(template_id="tpl-2"), ENV, "template differs"),
        (a_run(template_version=4), ENV, "template version differs"),
        (
            a_run(spec=AutomationSpec(phases=(Phase("deploy", "busybox", ("rm -rf /",)),))),
            ENV,
            "content hash differs",
        ),
        (
            a_run(
                spec=AutomationSpec(phases=(Phase("deploy", "alpine", SPEC.phases[0].commands),))
            ),
            ENV,
            "content hash differs",
        ),
        (a_run(), {**ENV, "TARGET": "staging"}, "variables hash differs"),
        (a_run(), {**ENV, "PASSWORD": "other"}, "variables hash differs"),
        (a_run(), {**ENV, "EXTRA": "1"}, "variables hash differs"),
    ],
)
def test_a_run_that_differs_from_its_grant_is_refused_naming_what(
    run: Run, env: dict[str, str], reason: str
) -> None:
    with pytest.raises(GrantRefused, match=reason):
        check_grant(a_grant(), run, env, T0)


def test_an_expired_grant_is_refused() -> None:
    grant = a_grant(ttl=timedelta(minutes=5))
    check_grant(grant, a_run(), ENV, T0 + timedelta(minutes=4))
    with pytest.raises(GrantRefused, match="expired"):
        check_grant(grant, a_run(), ENV, T0 + timedelta(minutes=5))


def test_the_variables_hash_is_salted_with_the_run() -> None:
    one = a_grant()
    other = a_grant(a_run(id="run-2"))
    assert one.variables_sha256 != other.variables_sha256


# ------------------------------------------------------------------ Ed25519


def ring() -> Ed25519KeyRing:
    return Ed25519KeyRing([GrantKey.generate(T0)])


def test_signed_grants_verify_with_the_pinned_public_key() -> None:
    keys = ring()
    signed = keys.sign(a_grant())
    assert signed.key_id == keys.key_id
    pinned = Ed25519GrantVerifier([load_public_key(public_pem(keys.current.public))])
    assert pinned.verify(decode_signed(encode_signed(signed))) == signed.grant
    assert keys.verify(signed) == signed.grant


@pytest.mark.parametrize(
    "field",
    [
        "run_id",
        "template_id",
        "template_version",
        "content_sha256",
        "variables_sha256",
        "approver_ids",
        "approval_id",
        "issued_at",
        "expires_at",
    ],
)
def test_changing_any_field_breaks_the_signature(field: str) -> None:
    keys = ring()
    signed = keys.sign(a_grant())
    value = getattr(signed.grant, field)
    changed: Any = (
        value + timedelta(days=1)
        if isinstance(value, datetime)
        else value + 1
        if isinstance(value, int)
        else (*value, "mallory")
        if isinstance(value, tuple)
        else f"{value}x"
    )
    tampered = SignedGrant(attrs.evolve(signed.grant, **{field: changed}), signed.signature)
    with pytest.raises(GrantRefused, match="signature does not verify"):
        keys.verify(decode_signed(encode_signed(tampered)))


def test_a_grant_signed_by_an_unknown_key_is_refused() -> None:
    signed = ring().sign(a_grant())
    with pytest.raises(GrantRefused, match=f"unknown key {signed.key_id}"):
        ring().verifier().verify(signed)


def test_after_rotation_old_grants_verify_until_they_expire() -> None:
    first = ring()
    old = first.sign(a_grant())
    keys = rotate(first.keys, T0 + timedelta(hours=1))
    second = Ed25519KeyRing(keys)
    assert second.key_id != first.key_id
    new = second.sign(a_grant())
    assert new.key_id == second.key_id
    verifier = second.verifier()
    assert verifier.verify(old) == old.grant
    assert verifier.verify(new) == new.grant
    check_grant(verifier.verify(old), a_run(), ENV, T0 + timedelta(hours=23))
    with pytest.raises(GrantRefused, match="expired"):
        check_grant(verifier.verify(old), a_run(), ENV, T0 + timedelta(hours=24))
    # A retired key's private half cannot be used to date a grant after its retirement.
    retired = next(k for k in keys if k.key_id == first.key_id)
    assert retired.private is not None
    late = attrs.evolve(old.grant, issued_at=T0 + timedelta(hours=2))
    forged = SignedGrant(late, retired.private.sign(encode_grant(late)))
    with pytest.raises(GrantRefused, match="after its key"):
        second.verify(forged)
    # Once every grant it signed has expired, the retired key is dropped: unknown from then on.
    third = Ed25519KeyRing(rotate(keys, T0 + timedelta(hours=26)))
    with pytest.raises(GrantRefused, match="unknown key"):
        third.verify(old)
    assert third.verify(new) == new.grant


def test_public_keys_load_from_pem_or_raw_base64() -> None:
    key = GrantKey.generate(T0).public
    assert key_id_of(load_public_key(public_pem(key))) == key_id_of(key)
    assert key_id_of(load_public_key(public_b64(key))) == key_id_of(key)
    with pytest.raises(Invalid, match="expected a PEM public key"):
        load_public_key("bm90IGEga2V5")


def test_the_file_store_keeps_keys_sealed_with_mode_0600(tmp_path: Path) -> None:
    sealer = FernetSealer(os.urandom(32))
    store = FileGrantKeyStore(tmp_path / "keys", sealer)
    first = store.ring(T0)
    assert store.ring(T0).key_id == first.key_id
    rotated = store.rotate(T0 + timedelta(hours=1))
    files = sorted((tmp_path / "keys").iterdir())
    assert len(files) == 2
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert "PRIVATE" not in path.read_text()
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    again = store.ring(T0 + timedelta(hours=2))
    assert again.key_id == rotated.key_id
    assert again.verify(first.sign(a_grant())).key_id == first.key_id
    with pytest.raises(Invalid):
        FileGrantKeyStore(tmp_path / "keys", FernetSealer(os.urandom(32))).load()
