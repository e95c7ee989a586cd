"""Runbook templates: a name owned by a user or an organisation, and its numbered versions."""

from __future__ import annotations

from datetime import datetime

import attrs


@attrs.frozen
class Template:
    id: str
    name: str
    created_at: datetime
    default_version: int = 1
    latest_version: int = 1
    org_id: str | None = None
    owner_id: str | None = None
    description: str = ""


@attrs.frozen
class TemplateVersion:
    template_id: str
    version: int
    content: str
    created_at: datetime
    created_by: str | None = None
