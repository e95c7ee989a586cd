"""Template endpoints: submit versions, list, get, versions, default version, delete, sharing."""

from __future__ import annotations

from collections.abc import Mapping

from adapters.http.schemas.templates import (
    DefaultVersion,
    TemplateCode,
    TemplateDetail,
    TemplateInfo,
    TemplateInvitationInfo,
    TemplateShare,
    TemplateSubmit,
    TemplateUserInfo,
    TemplateVersionInfo,
    detail_out,
    invitation_out,
    template_out,
    user_out,
    version_out,
)
from adapters.template_reader import read_template
from domain.errors import FieldError, Invalid
from domain.services import templates
from domain.services.platform import Platform
from entrypoints.http.api import Api, Call, QueryParam, whole_number

V1 = "/api/v1"
TEMPLATE = f"{V1}/templates/{{template}}"
ORG_QUERY = QueryParam("org", "the org whose template this is (code or id); none: a personal one")


def register(api: Api, p: Platform) -> None:
    """Declare every template endpoint; ``{template}`` is a template id or name."""

    @api.endpoint(
        "POST",
        f"{V1}/templates",
        summary="Submit an AutomationTemplate (a new template, or a new version of one)",
        tag="templates",
        body=TemplateSubmit,
        response=TemplateDetail,
        status=201,
    )
    async def submit_template(call: Call) -> TemplateDetail:
        body: TemplateSubmit = call.body
        view = await templates.submit_template(
            p, call.caller, body.content, read=read_template, source=body.source, org_ref=body.org
        )
        return detail_out(view)

    @api.endpoint(
        "GET",
        f"{V1}/templates",
        summary="List my templates and those shared with me, or an org's",
        tag="templates",
        response=list[TemplateInfo],
        query=(ORG_QUERY,),
    )
    async def list_templates(call: Call) -> list[TemplateInfo]:
        found = await templates.list_templates(p, call.caller, _org(call.query))
        return [template_out(v) for v in found]

    @api.endpoint(
        "GET",
        TEMPLATE,
        summary="Get a template with the content of its default version (or of ?version=N)",
        tag="templates",
        response=TemplateDetail,
        query=(ORG_QUERY, QueryParam("version", "the version to show", int)),
    )
    async def get_template(call: Call) -> TemplateDetail:
        view = await templates.get_template(
            p,
            call.caller,
            call.path["template"],
            _org(call.query),
            _version(call.query.get("version")),
        )
        return detail_out(view)

    @api.endpoint(
        "DELETE",
        TEMPLATE,
        summary="Delete a template with every version",
        tag="templates",
        response=TemplateInfo,
        query=(ORG_QUERY,),
    )
    async def delete_template(call: Call) -> TemplateInfo:
        view = await templates.get_template(p, call.caller, call.path["template"], _org(call.query))
        await templates.delete_template(p, call.caller, view.template.id)
        return template_out(view)

    @api.endpoint(
        "GET",
        f"{TEMPLATE}/versions",
        summary="List a template's versions",
        tag="templates",
        response=list[TemplateVersionInfo],
        query=(ORG_QUERY,),
    )
    async def list_template_versions(call: Call) -> list[TemplateVersionInfo]:
        template, versions = await templates.list_versions(
            p, call.caller, call.path["template"], _org(call.query)
        )
        return [version_out(template, v) for v in versions]

    @api.endpoint(
        "PUT",
        f"{TEMPLATE}/default-version",
        summary="Choose the version runs use",
        tag="templates",
        body=DefaultVersion,
        response=TemplateDetail,
        query=(ORG_QUERY,),
    )
    async def set_default_version(call: Call) -> TemplateDetail:
        body: DefaultVersion = call.body
        view = await templates.set_default_version(
            p, call.caller, call.path["template"], body.version, _org(call.query)
        )
        return detail_out(view)

    @api.endpoint(
        "POST",
        f"{TEMPLATE}/users",
        summary="Share a personal template: invite a user by email with some rights",
        tag="templates",
        body=TemplateShare,
        response=TemplateInvitationInfo,
        status=201,
    )
    async def invite_template_user(call: Call) -> TemplateInvitationInfo:
        body: TemplateShare = call.body
        rights = templates.rights_named(body.rights)
        invitation = await templates.invite_user(
            p, call.caller, call.path["template"], body.email, rights
        )
        return invitation_out(invitation)

    @api.endpoint(
        "GET",
        f"{TEMPLATE}/users",
        summary="List who may use a personal template, with their rights",
        tag="templates",
        response=list[TemplateUserInfo],
    )
    async def list_template_users(call: Call) -> list[TemplateUserInfo]:
        found = await templates.list_users(p, call.caller, call.path["template"])
        return [user_out(u) for u in found]

    @api.endpoint(
        "DELETE",
        f"{TEMPLATE}/users/{{user}}",
        summary="Take a user's access to a personal template away (user id or email)",
        tag="templates",
        response=TemplateUserInfo,
    )
    async def remove_template_user(call: Call) -> TemplateUserInfo:
        return user_out(
            await templates.remove_user(p, call.caller, call.path["template"], call.path["user"])
        )

    @api.endpoint(
        "POST",
        f"{V1}/template-invitations/accept",
        summary="Accept a template invitation with its join code",
        tag="templates",
        body=TemplateCode,
        response=TemplateInfo,
    )
    async def accept_template_invitation(call: Call) -> TemplateInfo:
        body: TemplateCode = call.body
        return template_out(await templates.accept_invitation(p, call.caller, body.code))

    @api.endpoint(
        "POST",
        f"{V1}/template-invitations/reject",
        summary="Reject a template invitation",
        tag="templates",
        body=TemplateCode,
        response=TemplateInvitationInfo,
    )
    async def reject_template_invitation(call: Call) -> TemplateInvitationInfo:
        body: TemplateCode = call.body
        return invitation_out(await templates.reject_invitation(p, call.caller, body.code))


def _org(query: Mapping[str, str]) -> str | None:
    return query.get("org", "").strip() or None


def _version(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    version = whole_number(raw, "version", "expected 1 or more")
    if version < 1:
        raise Invalid(
            "the version is not valid", errors=(FieldError("version", "expected 1 or more"),)
        )
    return version
