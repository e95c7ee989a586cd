"""Workers: processes in a client's network that pull and execute an organisation's runs."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import attrs


@attrs.frozen
class Worker:
    id: str
    org_id: str
    name: str
    version: str
    last_seen_at: datetime
    token_id: str | None = None
    labels: Mapping[str, str] = attrs.field(factory=dict)
    runs_in_progress: int = 0
