"""The transactional outbox: messages committed with the data they announce, published after."""

from __future__ import annotations

from datetime import datetime

import attrs


@attrs.frozen
class OutboxMessage:
    """A queue message stored in the same transaction as the change it announces.

    A relay publishes it afterwards (the message id makes a second publish a duplicate the
    queue drops), so a committed change is announced even if the process dies in between.
    """

    id: str
    topic: str
    body: bytes
    created_at: datetime
    published_at: datetime | None = None
