"""Roles as allow and deny bitmasks over resources × actions; deny always wins."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import IntFlag, StrEnum

import attrs


class Action(IntFlag):
    CREATE = 1
    VIEW = 2
    UPDATE = 4
    DELETE = 8
    EXECUTE = 16
    MANAGE = 32


NO_ACTIONS = Action(0)
ALL_ACTIONS = Action(63)
REPORTER = Action.VIEW
OPERATOR_USER = Action.VIEW | Action.EXECUTE
OPERATOR = OPERATOR_USER | Action.CREATE | Action.UPDATE | Action.DELETE
ADMIN = OPERATOR | Action.MANAGE


class Resource(StrEnum):
    AUTOMATION_LOGS = "automation_logs"
    AUTOMATIONS = "automations"
    TEMPLATES = "templates"
    ORG = "org"
    ORG_BILLING = "org_billing"
    ORG_CONFIG = "org_config"
    ORG_USER = "org_user"


@attrs.frozen
class Grant:
    allow: Action = NO_ACTIONS
    deny: Action = NO_ACTIONS


@attrs.frozen
class Role:
    id: str
    org_id: str
    name: str
    grants: Mapping[Resource, Grant] = attrs.field(factory=dict)
    builtin: bool = False


ADMINISTRATOR_ROLE = "Administrator (Default)"
WORKER_ROLE = "Worker (Default)"


def default_roles(org_id: str, admin_id: str, worker_id: str) -> tuple[Role, Role]:
    admin = Role(
        admin_id,
        org_id,
        ADMINISTRATOR_ROLE,
        {r: Grant(allow=ADMIN) for r in Resource},
        builtin=True,
    )
    worker = Role(
        worker_id,
        org_id,
        WORKER_ROLE,
        {
            Resource.AUTOMATION_LOGS: Grant(
                allow=Action.CREATE | Action.VIEW | Action.UPDATE | Action.MANAGE
            ),
            Resource.AUTOMATIONS: Grant(allow=Action.CREATE | Action.VIEW | Action.UPDATE),
            Resource.TEMPLATES: Grant(allow=Action.VIEW),
        },
        builtin=True,
    )
    return admin, worker


@attrs.frozen
class Decision:
    allowed: bool
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


def decide(roles: Iterable[Role], action: Action, resource: Resource) -> Decision:
    """The one policy function: OR every role's masks; a deny bit refuses, an allow bit permits."""
    roles = tuple(roles)
    if not roles:
        return Decision(False, "has no role in this organisation")
    allowing = [r.name for r in roles if action & r.grants.get(resource, Grant()).allow]
    denying = [r.name for r in roles if action & r.grants.get(resource, Grant()).deny]
    verb = f"{action.name.lower() if action.name else action.value} {resource.value}"
    if denying:
        return Decision(False, f"role {', '.join(denying)} denies {verb}")
    if allowing:
        return Decision(True, f"role {', '.join(allowing)} allows {verb}")
    return Decision(False, f"no role allows {verb}")
