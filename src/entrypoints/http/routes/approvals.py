"""Approval endpoints: the requests I may answer (or an org's), one request, approve, reject."""

from __future__ import annotations

from adapters.http.schemas.approvals import (
    ApprovalAnswer,
    ApprovalInfo,
    ApprovalPage,
    ApprovalSettingsInfo,
    ApprovalSettingsUpdate,
    PolicyInfo,
    PolicySubmit,
    approval_out,
    approval_page_out,
    policy_out,
    settings_out,
)
from adapters.template_reader import read_policy
from domain.approvals import ApprovalStatus, Verdict
from domain.errors import FieldError, Invalid
from domain.services import approvals
from domain.services.platform import Platform
from entrypoints.http.api import Api, Call, QueryParam, whole_number

V1 = "/api/v1"
APPROVAL = f"{V1}/approvals/{{approval}}"
POLICIES = f"{V1}/orgs/{{org}}/approval-policies"
POLICY = f"{POLICIES}/{{policy}}"
SETTINGS = f"{V1}/orgs/{{org}}/approval-settings"


def register(api: Api, p: Platform) -> None:
    """Declare every approval endpoint; ``{approval}`` is an approval id."""

    @api.endpoint(
        "GET",
        f"{V1}/approvals",
        summary="Approval requests: without org, the pending ones I may answer",
        tag="approvals",
        response=ApprovalPage,
        query=(
            QueryParam("org", "this org's requests (code or id)"),
            QueryParam("status", "only these statuses, comma-separated (default pending)"),
            QueryParam("limit", "at most this many (default 50, at most 200)", int),
            QueryParam("cursor", "continue after the page that returned this cursor"),
        ),
    )
    async def list_approvals(call: Call) -> ApprovalPage:
        q = call.query
        try:
            statuses = tuple(ApprovalStatus(s.strip().lower())
                             for s in (q.get("status") or "pending").split(",") if s.strip())
        except ValueError:
            raise Invalid("unknown approval status", errors=(FieldError(
                "status", f"expected some of: {', '.join(s.value for s in ApprovalStatus)}"),),
            ) from None
        limit = whole_number(q.get("limit") or "50", "limit", "1 to 200")
        page = await approvals.list_approvals(
            p, call.caller, org_ref=q.get("org") or None, statuses=statuses, limit=limit,
            cursor=q.get("cursor") or None)
        return approval_page_out(page)

    @api.endpoint("GET", APPROVAL, summary="Get an approval request", tag="approvals",
                  response=ApprovalInfo)
    async def get_approval(call: Call) -> ApprovalInfo:
        return approval_out(await approvals.get_approval(p, call.caller, call.path["approval"]))

    @api.endpoint("POST", f"{APPROVAL}/approve", summary="Approve (with a TOTP code if required)",
                  tag="approvals", body=ApprovalAnswer, response=ApprovalInfo)
    async def approve(call: Call) -> ApprovalInfo:
        body: ApprovalAnswer = call.body
        return approval_out(await approvals.respond_to(
            p, call.caller, call.path["approval"], Verdict.APPROVE, code=body.code,
            comment=body.comment))

    @api.endpoint("POST", f"{APPROVAL}/reject", summary="Reject, with a reason",
                  tag="approvals", body=ApprovalAnswer, response=ApprovalInfo)
    async def reject(call: Call) -> ApprovalInfo:
        body: ApprovalAnswer = call.body
        return approval_out(await approvals.respond_to(
            p, call.caller, call.path["approval"], Verdict.REJECT, comment=body.comment))

    @api.endpoint("POST", POLICIES, summary="Store an approval policy in an org (org config)",
                  tag="approvals", body=PolicySubmit, response=PolicyInfo, status=201)
    async def create_policy(call: Call) -> PolicyInfo:
        body: PolicySubmit = call.body
        return policy_out(await approvals.create_policy(
            p, call.caller, call.path["org"], body.content, read=read_policy, source=body.source))

    @api.endpoint("GET", POLICIES, summary="An org's approval policies", tag="approvals",
                  response=list[PolicyInfo])
    async def list_policies(call: Call) -> list[PolicyInfo]:
        found = await approvals.list_policies(p, call.caller, call.path["org"])
        return [policy_out(s) for s in found]

    @api.endpoint("GET", POLICY, summary="Get an approval policy by name or id", tag="approvals",
                  response=PolicyInfo)
    async def get_policy(call: Call) -> PolicyInfo:
        return policy_out(await approvals.get_policy(
            p, call.caller, call.path["org"], call.path["policy"]))

    @api.endpoint("PUT", POLICY, summary="Replace an approval policy", tag="approvals",
                  body=PolicySubmit, response=PolicyInfo)
    async def update_policy(call: Call) -> PolicyInfo:
        body: PolicySubmit = call.body
        return policy_out(await approvals.update_policy(
            p, call.caller, call.path["org"], call.path["policy"], body.content, read=read_policy,
            source=body.source))

    @api.endpoint("DELETE", POLICY, summary="Remove an approval policy", tag="approvals",
                  response=PolicyInfo)
    async def remove_policy(call: Call) -> PolicyInfo:
        return policy_out(await approvals.remove_policy(
            p, call.caller, call.path["org"], call.path["policy"]))

    @api.endpoint("GET", SETTINGS, summary="An org's approval settings", tag="approvals",
                  response=ApprovalSettingsInfo)
    async def get_settings(call: Call) -> ApprovalSettingsInfo:
        return settings_out(await approvals.get_settings(p, call.caller, call.path["org"]))

    @api.endpoint("PATCH", SETTINGS, summary="Change an org's approval settings (org config)",
                  tag="approvals", body=ApprovalSettingsUpdate, response=ApprovalSettingsInfo)
    async def update_settings(call: Call) -> ApprovalSettingsInfo:
        body: ApprovalSettingsUpdate = call.body
        return settings_out(await approvals.update_settings(
            p, call.caller, call.path["org"], required=body.required, labels=body.labels,
            policy_ref=body.policy_ref))
