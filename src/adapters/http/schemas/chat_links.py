"""Wire types of chat identity linking."""

from __future__ import annotations

from datetime import datetime

import attrs


@attrs.frozen
class LinkCodeInfo:
    """A single-use code to send the bot; shown once, stored as a hash."""

    platform: str
    code: str
    expires_at: datetime
    instructions: str
