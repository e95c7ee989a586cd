"""Helpers for org tests: users made directly in the store, and callers acting as them."""

from __future__ import annotations

import itertools

from domain.services.platform import Caller, Platform
from domain.users import User

_serial = itertools.count()


async def make_user(p: Platform, email: str | None = None) -> Caller:
    """A verified user stored through the unit of work, and a caller acting as them."""
    email = email or f"user{next(_serial)}-{p.ids.new_id().lower()}@example.com"
    now = p.clock.now()
    user = User(p.ids.new_id(), email, p.passwords.hash("p@ssw0rd!!Opsicle"), now, now)
    async with p.uow() as uow:
        await uow.users.add(user)
        await uow.commit()
    return Caller(user.id, "127.0.0.1", "pytest", email)


def unique_code(prefix: str = "org") -> str:
    return f"{prefix}-{next(_serial)}-test"
