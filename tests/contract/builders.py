"""Unique ids and domain values for the contract suites."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from domain.audit import AuditEvent, Outcome
from domain.automations import PhaseResult, Run, RunStatus
from domain.orgs import Invitation, InvitationStatus, Membership, MemberType, Organisation
from domain.outbox import OutboxMessage
from domain.permissions import Action, Grant, Resource, Role
from domain.resources import AutomationSpec, Phase, VolumeMount
from domain.templates import (
    Template,
    TemplateGrant,
    TemplateInvitation,
    TemplateInvitationStatus,
    TemplateRight,
    TemplateVersion,
)
from domain.tokens import WorkerToken
from domain.users import CodePurpose, MfaEnrolment, OneTimeCode, User
from domain.workers import Worker

# Microseconds on purpose: the stores must keep them.
T0 = datetime(2025, 3, 14, 15, 9, 26, 535897, tzinfo=UTC)


def uid(prefix: str = "id") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def user(**kw: object) -> User:
    i = uid("usr")
    fields: dict[str, object] = {"id": i, "email": f"{i}@Example.com", "password_hash": "h",
                                 "created_at": T0}
    fields.update(kw)
    return User(**fields)  # type: ignore[arg-type]


def org(**kw: object) -> Organisation:
    i = uid("org")
    fields: dict[str, object] = {"id": i, "name": f"Org {i}", "code": i.upper(),
                                 "created_at": T0, "created_by": "someone"}
    fields.update(kw)
    return Organisation(**fields)  # type: ignore[arg-type]


def membership(org_id: str, user_id: str, kind: MemberType = MemberType.MEMBER,
               joined: float = 0) -> Membership:
    return Membership(org_id=org_id, user_id=user_id, type=kind, joined_at=at(joined))


def role(org_id: str, name: str | None = None) -> Role:
    return Role(id=uid("role"), org_id=org_id, name=name or uid("Role"), grants={
        Resource.TEMPLATES: Grant(allow=Action.VIEW | Action.CREATE, deny=Action.DELETE),
        Resource.AUTOMATIONS: Grant(allow=Action.EXECUTE),
    })


def token(org_id: str, name: str = "ci") -> WorkerToken:
    return WorkerToken(id=uid("tok"), org_id=org_id, name=name, secret_hash="argon2-hash",
                       created_at=T0, created_by="admin")


def enrolment(user_id: str, **kw: object) -> MfaEnrolment:
    fields: dict[str, object] = {"user_id": user_id, "secret": uid("SECRET").upper(),
                                 "created_at": T0}
    fields.update(kw)
    return MfaEnrolment(**fields)  # type: ignore[arg-type]


def code(user_id: str, purpose: CodePurpose = CodePurpose.VERIFY_EMAIL, created: float = 0,
         **kw: object) -> OneTimeCode:
    fields: dict[str, object] = {"id": uid("code"), "user_id": user_id, "purpose": purpose,
                                 "code_hash": uid("sha256"), "created_at": at(created),
                                 "expires_at": at(created + 3600)}
    fields.update(kw)
    return OneTimeCode(**fields)  # type: ignore[arg-type]


def invitation(org_id: str, email: str | None = None, created: float = 0,
               **kw: object) -> Invitation:
    fields: dict[str, object] = {
        "id": uid("inv"), "org_id": org_id, "email": email or f"{uid('guest')}@Example.com",
        "member_type": MemberType.MEMBER, "inviter_id": "usr-admin", "code_hash": uid("sha256"),
        "created_at": at(created), "expires_at": at(created + 86400),
        "status": InvitationStatus.PENDING,
    }
    fields.update(kw)
    return Invitation(**fields)  # type: ignore[arg-type]


def template(*, org_id: str | None = None, owner_id: str | None = None,
             name: str | None = None) -> tuple[Template, TemplateVersion]:
    t = Template(id=uid("tpl"), name=name or uid("backup"), created_at=T0, org_id=org_id,
                 owner_id=owner_id, description="nightly backup")
    return t, version(t.id, 1)


def version(template_id: str, number: int) -> TemplateVersion:
    return TemplateVersion(template_id=template_id, version=number,
                           content=f"apiVersion: v1\n# version {number} ✓\n",
                           created_at=at(number), created_by="author")


def template_grant(template_id: str, user_id: str | None = None, granted: float = 0,
                   rights: TemplateRight = TemplateRight.VIEW | TemplateRight.EXECUTE,
                   ) -> TemplateGrant:
    return TemplateGrant(template_id=template_id, user_id=user_id or uid("usr"), rights=rights,
                         granted_at=at(granted), granted_by="usr-owner")


def template_invitation(template_id: str, email: str | None = None, created: float = 0,
                        **kw: object) -> TemplateInvitation:
    fields: dict[str, object] = {
        "id": uid("tinv"), "template_id": template_id,
        "email": email or f"{uid('guest')}@Example.com",
        "rights": TemplateRight.VIEW | TemplateRight.UPDATE, "inviter_id": "usr-owner",
        "code_hash": uid("sha256"), "created_at": at(created),
        "expires_at": at(created + 86400), "status": TemplateInvitationStatus.PENDING,
    }
    fields.update(kw)
    return TemplateInvitation(**fields)  # type: ignore[arg-type]


def outbox_message(created: float = 0, **kw: object) -> OutboxMessage:
    fields: dict[str, object] = {"id": uid("msg"), "topic": f"runs.{uid('org')}",
                                 "body": b'{"runId":"r"}\x00\xff', "created_at": at(created)}
    fields.update(kw)
    return OutboxMessage(**fields)  # type: ignore[arg-type]


SPEC = AutomationSpec(
    phases=(Phase("build", "alpine:3", ("echo one", "echo 'two'")),
            Phase("ship", "busybox", ("true",), timeout=600)),
    volume_mounts=(VolumeMount("/srv/data", "/data"),),
)


def run(*, org_id: str | None = None, created: float = 0, status: RunStatus = RunStatus.QUEUED,
        **kw: object) -> Run:
    fields: dict[str, object] = {
        "id": uid("run"), "spec": SPEC, "status": status, "created_at": at(created),
        "name": "backup", "org_id": org_id, "template_id": "tpl-1", "template_version": 2,
        "requested_by": "usr-1", "comment": "because",
        "variables": {"host": "db1", "verbose": True, "count": 3, "ratio": 0.5},
        "phases": (PhaseResult("build", exit_code=None), PhaseResult("ship")),
        "updated_at": at(created),
    }
    fields.update(kw)
    return Run(**fields)  # type: ignore[arg-type]


def worker(org_id: str, name: str = "w1") -> Worker:
    return Worker(id=uid("wkr"), org_id=org_id, name=name, version="0.1.0", last_seen_at=T0,
                  token_id="tok-1", labels={"zone": "eu", "gpu": "no"}, runs_in_progress=1)


def audit_event(**kw: object) -> AuditEvent:
    fields: dict[str, object] = {"id": uid("evt"), "at": T0, "actor": "usr-1", "verb": "create",
                                 "resource_type": "template", "resource_id": "tpl-1",
                                 "org_id": None, "outcome": Outcome.SUCCESS,
                                 "source_ip": "127.0.0.1", "user_agent": "opsicle-cli/0.1",
                                 "data": {"name": "backup"}}
    fields.update(kw)
    return AuditEvent(**fields)  # type: ignore[arg-type]
