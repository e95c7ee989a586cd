"""Explicit row <-> domain mapping for the SQL tables, and the opaque page cursors."""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import RowMapping

from domain.approvals import (
    Approval,
    ApprovalResponse,
    ApprovalSettings,
    ApprovalStatus,
    StoredPolicy,
    Verdict,
)
from domain.audit import AuditEvent, Outcome
from domain.automations import PhaseResult, PhaseStatus, Run, RunStatus
from domain.errors import FieldError, Invalid
from domain.orgs import Invitation, InvitationStatus, Membership, MemberType, Organisation
from domain.outbox import OutboxMessage
from domain.permissions import Action, Grant, Resource, Role
from domain.resources import (
    ApprovalPolicy,
    AutomationSpec,
    Kind,
    Metadata,
    Phase,
    PolicySpec,
    PolicyWebhook,
    VariableValue,
    VolumeMount,
    parse_resource,
    to_data,
)
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
from domain.webhooks import DeliveryStatus, WebhookDelivery
from domain.workers import Worker


def dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


# ---------------------------------------------------------------- cursors


def encode_cursor(*key: object) -> str:
    return base64.urlsafe_b64encode(dumps(list(key)).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise bad_cursor() from exc
    if not isinstance(key, list) or len(key) != arity:
        raise bad_cursor()
    return key


MAX_PAGE = 1000


def check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise Invalid("the page size is not valid",
                      errors=(FieldError("limit", f"expected 1 to {MAX_PAGE}"),))


def bad_cursor() -> Invalid:
    return Invalid("the page cursor is not valid", code="invalid_cursor",
                   errors=(FieldError("cursor", "is not a cursor this list returned"),))


# ---------------------------------------------------------------- accounts and orgs


def user_row(u: User) -> dict[str, Any]:
    return {"id": u.id, "email": u.email, "email_key": u.email.lower(),
            "password_hash": u.password_hash, "created_at": u.created_at,
            "email_verified_at": u.email_verified_at, "disabled_at": u.disabled_at}


def user_of(r: RowMapping) -> User:
    return User(id=r["id"], email=r["email"], password_hash=r["password_hash"],
                created_at=r["created_at"], email_verified_at=r["email_verified_at"],
                disabled_at=r["disabled_at"])


def org_row(o: Organisation) -> dict[str, Any]:
    return {"id": o.id, "name": o.name, "code": o.code, "code_key": o.code.lower(),
            "created_at": o.created_at, "created_by": o.created_by}


def org_of(r: RowMapping) -> Organisation:
    return Organisation(id=r["id"], name=r["name"], code=r["code"], created_at=r["created_at"],
                        created_by=r["created_by"])


def membership_row(m: Membership) -> dict[str, Any]:
    return {"org_id": m.org_id, "user_id": m.user_id, "type": m.type.value,
            "joined_at": m.joined_at}


def membership_of(r: Mapping[Any, Any]) -> Membership:
    return Membership(org_id=r["org_id"], user_id=r["user_id"], type=MemberType(r["type"]),
                      joined_at=r["joined_at"])


def role_row(r: Role) -> dict[str, Any]:
    return {"id": r.id, "org_id": r.org_id, "name": r.name, "builtin": r.builtin}


def grant_rows(r: Role) -> list[dict[str, Any]]:
    return [{"role_id": r.id, "resource": res.value, "allow_mask": int(g.allow),
             "deny_mask": int(g.deny)} for res, g in r.grants.items()]


def role_of(r: RowMapping, grants: list[RowMapping]) -> Role:
    return Role(id=r["id"], org_id=r["org_id"], name=r["name"], builtin=bool(r["builtin"]),
                grants={Resource(g["resource"]): Grant(allow=Action(g["allow_mask"]),
                                                       deny=Action(g["deny_mask"]))
                        for g in grants})


def token_row(t: WorkerToken) -> dict[str, Any]:
    return {"id": t.id, "org_id": t.org_id, "name": t.name, "secret_hash": t.secret_hash,
            "created_at": t.created_at, "created_by": t.created_by,
            "revoked_at": t.revoked_at, "rotated_at": t.rotated_at}


def token_of(r: RowMapping) -> WorkerToken:
    return WorkerToken(id=r["id"], org_id=r["org_id"], name=r["name"],
                       secret_hash=r["secret_hash"], created_at=r["created_at"],
                       created_by=r["created_by"], revoked_at=r["revoked_at"],
                       rotated_at=r["rotated_at"])


def mfa_row(e: MfaEnrolment) -> dict[str, Any]:
    return {"user_id": e.user_id, "secret": e.secret, "created_at": e.created_at,
            "confirmed_at": e.confirmed_at, "last_step": e.last_step}


def mfa_of(r: RowMapping) -> MfaEnrolment:
    return MfaEnrolment(user_id=r["user_id"], secret=r["secret"], created_at=r["created_at"],
                        confirmed_at=r["confirmed_at"], last_step=r["last_step"])


def code_row(c: OneTimeCode) -> dict[str, Any]:
    return {"id": c.id, "user_id": c.user_id, "purpose": c.purpose.value,
            "code_hash": c.code_hash, "created_at": c.created_at, "expires_at": c.expires_at,
            "used_at": c.used_at}


def code_of(r: RowMapping) -> OneTimeCode:
    return OneTimeCode(id=r["id"], user_id=r["user_id"], purpose=CodePurpose(r["purpose"]),
                       code_hash=r["code_hash"], created_at=r["created_at"],
                       expires_at=r["expires_at"], used_at=r["used_at"])


def invitation_row(i: Invitation) -> dict[str, Any]:
    key = i.email.lower()
    return {"id": i.id, "org_id": i.org_id, "email": i.email, "email_key": key,
            "pending_key": key if i.status is InvitationStatus.PENDING else None,
            "member_type": i.member_type.value, "inviter_id": i.inviter_id,
            "code_hash": i.code_hash, "created_at": i.created_at, "expires_at": i.expires_at,
            "status": i.status.value, "answered_at": i.answered_at}


def invitation_of(r: RowMapping) -> Invitation:
    return Invitation(id=r["id"], org_id=r["org_id"], email=r["email"],
                      member_type=MemberType(r["member_type"]), inviter_id=r["inviter_id"],
                      code_hash=r["code_hash"], created_at=r["created_at"],
                      expires_at=r["expires_at"], status=InvitationStatus(r["status"]),
                      answered_at=r["answered_at"])


# ---------------------------------------------------------------- templates


def owner_key(org_id: str | None, owner_id: str | None) -> str:
    """An org's templates belong to the org; only templates outside any org belong to a user."""
    return f"org:{org_id}" if org_id is not None else f"user:{owner_id}"


def template_row(t: Template) -> dict[str, Any]:
    return {"id": t.id, "name": t.name, "owner_key": owner_key(t.org_id, t.owner_id),
            "org_id": t.org_id, "owner_id": t.owner_id, "description": t.description,
            "default_version": t.default_version, "latest_version": t.latest_version,
            "created_at": t.created_at}


def template_of(r: RowMapping) -> Template:
    return Template(id=r["id"], name=r["name"], created_at=r["created_at"],
                    default_version=r["default_version"], latest_version=r["latest_version"],
                    org_id=r["org_id"], owner_id=r["owner_id"], description=r["description"])


def version_row(v: TemplateVersion) -> dict[str, Any]:
    return {"template_id": v.template_id, "version": v.version, "content": v.content,
            "created_at": v.created_at, "created_by": v.created_by}


def version_of(r: RowMapping) -> TemplateVersion:
    return TemplateVersion(template_id=r["template_id"], version=r["version"],
                           content=r["content"], created_at=r["created_at"],
                           created_by=r["created_by"])


def template_grant_row(g: TemplateGrant) -> dict[str, Any]:
    return {"template_id": g.template_id, "user_id": g.user_id, "rights": g.rights.value,
            "granted_at": g.granted_at, "granted_by": g.granted_by}


def template_grant_of(r: RowMapping) -> TemplateGrant:
    return TemplateGrant(template_id=r["template_id"], user_id=r["user_id"],
                         rights=TemplateRight(r["rights"]), granted_at=r["granted_at"],
                         granted_by=r["granted_by"])


def template_invitation_row(i: TemplateInvitation) -> dict[str, Any]:
    key = i.email.lower()
    return {"id": i.id, "template_id": i.template_id, "email": i.email, "email_key": key,
            "pending_key": key if i.status is TemplateInvitationStatus.PENDING else None,
            "rights": i.rights.value, "inviter_id": i.inviter_id, "code_hash": i.code_hash,
            "created_at": i.created_at, "expires_at": i.expires_at, "status": i.status.value,
            "answered_at": i.answered_at}


def template_invitation_of(r: RowMapping) -> TemplateInvitation:
    return TemplateInvitation(
        id=r["id"], template_id=r["template_id"], email=r["email"],
        rights=TemplateRight(r["rights"]), inviter_id=r["inviter_id"],
        code_hash=r["code_hash"], created_at=r["created_at"], expires_at=r["expires_at"],
        status=TemplateInvitationStatus(r["status"]), answered_at=r["answered_at"])


# ---------------------------------------------------------------- outbox


def outbox_row(o: OutboxMessage) -> dict[str, Any]:
    return {"id": o.id, "topic": o.topic, "body": o.body, "created_at": o.created_at,
            "published_at": o.published_at}


def outbox_of(r: RowMapping) -> OutboxMessage:
    return OutboxMessage(id=r["id"], topic=r["topic"], body=bytes(r["body"]),
                         created_at=r["created_at"], published_at=r["published_at"])


# ---------------------------------------------------------------- runs and workers


def spec_data(spec: AutomationSpec) -> dict[str, Any]:
    return {
        "phases": [{"name": p.name, "image": p.image, "commands": list(p.commands),
                    "timeout": p.timeout} for p in spec.phases],
        "volume_mounts": [{"host": m.host, "container": m.container}
                          for m in spec.volume_mounts],
    }


@functools.lru_cache(maxsize=256)
def _spec_of_text(text: str) -> AutomationSpec:
    """A stored spec, read once per text: the runs of a template version share theirs, and
    every claim, heartbeat and completion reads its run (a spec is immutable)."""
    return spec_of(json.loads(text))


def spec_of(data: Mapping[str, Any]) -> AutomationSpec:
    return AutomationSpec(
        phases=tuple(Phase(name=p["name"], image=p["image"], commands=tuple(p["commands"]),
                           timeout=p["timeout"]) for p in data["phases"]),
        volume_mounts=tuple(VolumeMount(host=m["host"], container=m["container"])
                            for m in data["volume_mounts"]),
    )


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value.astimezone(UTC) if value.tzinfo is not None else value).isoformat()


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def phases_data(phases: tuple[PhaseResult, ...]) -> list[dict[str, Any]]:
    return [{"name": p.name, "status": p.status.value, "exit_code": p.exit_code,
             "started_at": _iso(p.started_at), "finished_at": _iso(p.finished_at)}
            for p in phases]


def phases_of(data: list[dict[str, Any]]) -> tuple[PhaseResult, ...]:
    return tuple(PhaseResult(name=p["name"], status=PhaseStatus(p["status"]),
                             exit_code=p["exit_code"], started_at=_dt(p["started_at"]),
                             finished_at=_dt(p["finished_at"])) for p in data)


def run_row(r: Run) -> dict[str, Any]:
    return {"id": r.id, "name": r.name, "org_id": r.org_id, "template_id": r.template_id,
            "template_version": r.template_version, "requested_by": r.requested_by,
            "comment": r.comment, "spec": dumps(spec_data(r.spec)),
            "variables": dumps(dict(r.variables)), "created_at": r.created_at,
            "sealed_secrets": r.sealed_secrets or None, **run_state_row(r)}


def run_state_row(r: Run) -> dict[str, Any]:
    """The columns an update writes: all but what the run was created with."""
    return {"status": r.status.value, "phases": dumps(phases_data(r.phases)),
            "reason": r.reason, "attempts": r.attempts, "worker_id": r.worker_id,
            "updated_at": r.updated_at, "started_at": r.started_at,
            "finished_at": r.finished_at, "lease_expires_at": r.lease_expires_at,
            "cancel_requested": r.cancel_requested, "approval_grant": r.grant or None}


def run_of(r: RowMapping) -> Run:
    variables: dict[str, VariableValue] = json.loads(r["variables"])
    return Run(id=r["id"], spec=_spec_of_text(r["spec"]), status=RunStatus(r["status"]),
               created_at=r["created_at"], name=r["name"], org_id=r["org_id"],
               template_id=r["template_id"], template_version=r["template_version"],
               requested_by=r["requested_by"], comment=r["comment"], variables=variables,
               phases=phases_of(json.loads(r["phases"])), reason=r["reason"],
               attempts=r["attempts"], worker_id=r["worker_id"], updated_at=r["updated_at"],
               started_at=r["started_at"], finished_at=r["finished_at"],
               lease_expires_at=r["lease_expires_at"],
               cancel_requested=bool(r["cancel_requested"]),
               sealed_secrets=r["sealed_secrets"] or "", grant=r["approval_grant"] or "")


def worker_row(w: Worker) -> dict[str, Any]:
    return {"id": w.id, "org_id": w.org_id, "name": w.name, "version": w.version,
            "last_seen_at": w.last_seen_at, "token_id": w.token_id,
            "labels": dumps(dict(w.labels)), "runs_in_progress": w.runs_in_progress}


def worker_of(r: RowMapping) -> Worker:
    return Worker(id=r["id"], org_id=r["org_id"], name=r["name"], version=r["version"],
                  last_seen_at=r["last_seen_at"], token_id=r["token_id"],
                  labels=json.loads(r["labels"]), runs_in_progress=r["runs_in_progress"])


# ---------------------------------------------------------------- audit


def audit_row(e: AuditEvent) -> dict[str, Any]:
    return {"id": e.id, "at": e.at, "actor": e.actor, "verb": e.verb,
            "resource_type": e.resource_type, "resource_id": e.resource_id,
            "org_id": e.org_id, "outcome": e.outcome.value, "source_ip": e.source_ip,
            "user_agent": e.user_agent, "data": dumps(dict(e.data)),
            "previous_hash": e.previous_hash, "hash": e.hash}


def audit_of(r: Mapping[Any, Any]) -> AuditEvent:
    return AuditEvent(id=r["id"], at=r["at"], actor=r["actor"], verb=r["verb"],
                      resource_type=r["resource_type"], resource_id=r["resource_id"],
                      org_id=r["org_id"], outcome=Outcome(r["outcome"]),
                      source_ip=r["source_ip"], user_agent=r["user_agent"],
                      data=json.loads(r["data"]), previous_hash=r["previous_hash"],
                      hash=r["hash"])


# ---------------------------------------------------------------- approvals

# The snapshot is stored in the YAML format under a placeholder name (only its spec counts).
_SNAPSHOT = "snapshot"


def policy_json(spec: PolicySpec) -> str:
    return dumps(to_data(ApprovalPolicy(metadata=Metadata(name=_SNAPSHOT), spec=spec)))


def policy_resource_of(text: str) -> ApprovalPolicy:
    resource = parse_resource(json.loads(text), expected=(Kind.APPROVAL_POLICY,))
    assert isinstance(resource, ApprovalPolicy)
    return resource


def approval_row(a: Approval) -> dict[str, Any]:
    return {"id": a.id, "run_id": a.run_id, "org_id": a.org_id, "requested_by": a.requested_by,
            "status": a.status.value, "quorum": a.quorum, "created_at": a.created_at,
            "expires_at": a.expires_at, "decided_at": a.decided_at,
            "policy": policy_json(a.policy),
            "responses": dumps([{"responder_id": r.responder_id, "verdict": r.verdict.value,
                                 "at": _iso(r.at), "channel": r.channel,
                                 "comment": r.comment} for r in a.responses]),
            "messages": dumps(dict(a.messages)), "reason": a.reason, "grant": a.grant or None}


def approval_of(r: RowMapping, responders: tuple[str, ...]) -> Approval:
    responses = tuple(
        ApprovalResponse(responder_id=x["responder_id"], verdict=Verdict(x["verdict"]),
                         at=datetime.fromisoformat(x["at"]), channel=x["channel"],
                         comment=x["comment"]) for x in json.loads(r["responses"]))
    return Approval(id=r["id"], run_id=r["run_id"], requested_by=r["requested_by"],
                    quorum=r["quorum"], expires_at=r["expires_at"], created_at=r["created_at"],
                    status=ApprovalStatus(r["status"]), responses=responses,
                    decided_at=r["decided_at"], org_id=r["org_id"],
                    policy=policy_resource_of(r["policy"]).spec, responders=responders,
                    messages=json.loads(r["messages"]), reason=r["reason"],
                    grant=r["grant"] or "")


def policy_row(p: StoredPolicy) -> dict[str, Any]:
    return {"id": p.id, "org_id": p.org_id, "name": p.name, "content": dumps(to_data(p.policy)),
            "created_at": p.created_at, "created_by": p.created_by, "updated_at": p.updated_at}


def policy_of(r: RowMapping) -> StoredPolicy:
    return StoredPolicy(id=r["id"], org_id=r["org_id"], policy=policy_resource_of(r["content"]),
                        created_at=r["created_at"], created_by=r["created_by"],
                        updated_at=r["updated_at"])


def settings_row(s: ApprovalSettings) -> dict[str, Any]:
    return {"org_id": s.org_id, "required": s.required, "labels": dumps(dict(s.labels)),
            "policy_ref": s.policy_ref, "updated_at": s.updated_at}


def settings_of(r: RowMapping) -> ApprovalSettings:
    return ApprovalSettings(org_id=r["org_id"], required=bool(r["required"]),
                            labels=json.loads(r["labels"]), policy_ref=r["policy_ref"],
                            updated_at=r["updated_at"])


# ---------------------------------------------------------------- webhook deliveries


def _hook_json(hook: PolicyWebhook) -> str:
    return policy_json(PolicySpec(webhooks=(hook,)))


def webhook_row(d: WebhookDelivery) -> dict[str, Any]:
    return {"id": d.id, "approval_id": d.approval_id, "org_id": d.org_id, "event": d.event,
            "hook": _hook_json(d.hook), "body": d.body, "status": d.status.value,
            "attempts": d.attempts, "last_status": d.last_status, "last_error": d.last_error,
            "created_at": d.created_at, "next_attempt_at": d.next_attempt_at,
            "lease_token": d.lease_token or None, "lease_until": d.lease_until,
            "finished_at": d.finished_at}


def webhook_of(r: RowMapping) -> WebhookDelivery:
    return WebhookDelivery(
        id=r["id"], approval_id=r["approval_id"], org_id=r["org_id"], event=r["event"],
        hook=policy_resource_of(r["hook"]).spec.webhooks[0], body=r["body"],
        created_at=r["created_at"], next_attempt_at=r["next_attempt_at"],
        status=DeliveryStatus(r["status"]), attempts=r["attempts"],
        last_error=r["last_error"], last_status=r["last_status"],
        lease_token=r["lease_token"] or "", lease_until=r["lease_until"],
        finished_at=r["finished_at"])
