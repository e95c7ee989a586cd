"""Worker tokens: an organisation's credentials for its workers, stored only as hashes."""

from __future__ import annotations

from datetime import datetime

import attrs

TOKEN_PREFIX = "opsicle-"  # noqa: S105 - a public prefix that makes leaked tokens easy to spot


@attrs.frozen
class WorkerToken:
    id: str
    org_id: str
    name: str
    secret_hash: str
    created_at: datetime
    created_by: str | None = None
    revoked_at: datetime | None = None
    rotated_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None
