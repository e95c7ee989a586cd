"""Template use cases: submit versions, list, get, default version, delete, personal sharing."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import timedelta
from typing import Protocol

import attrs

from domain.errors import Conflict, FieldError, Forbidden, Invalid, NotFound
from domain.permissions import Action, Resource, Role, decide
from domain.ports import Email, UnitOfWork
from domain.resources import AutomationTemplate
from domain.services.authorization import (
    Access,
    Hidden,
    Pending,
    Refused,
    authorize,
    permit,
    roles_of,
    unit_of_work,
    user_of,
)
from domain.services.platform import Caller, Platform, parse, record
from domain.templates import (
    ALL_TEMPLATE_RIGHTS,
    Template,
    TemplateGrant,
    TemplateInvitation,
    TemplateInvitationStatus,
    TemplateRight,
    TemplateVersion,
)
from domain.users import normalise_email

TEMPLATE_CODE_PREFIX = "tjoin-"
MAX_CONTENT = 512 * 1024

# What each right needs of an org's roles when the template belongs to an org.
ORG_ACTION: dict[TemplateRight, Action] = {
    TemplateRight.VIEW: Action.VIEW,
    TemplateRight.EXECUTE: Action.EXECUTE,
    TemplateRight.UPDATE: Action.UPDATE,
    TemplateRight.DELETE: Action.DELETE,
}
RIGHT_NAMES: dict[str, TemplateRight] = {
    "view": TemplateRight.VIEW,
    "execute": TemplateRight.EXECUTE,
    "update": TemplateRight.UPDATE,
    "delete": TemplateRight.DELETE,
    "invite": TemplateRight.INVITE,
}


class TemplateReader(Protocol):
    """Parses runbook text into one AutomationTemplate; raises ``Invalid`` with located errors.

    Parsing text is an adapter's job (YAML), so the use cases receive the parser.
    """

    def __call__(self, text: str, source: str) -> AutomationTemplate: ...


@attrs.frozen
class TemplateView:
    """A template as the caller sees it: their rights and, when asked, one version's content."""

    template: Template
    rights: TemplateRight
    version: TemplateVersion | None = None


@attrs.frozen
class TemplateUser:
    grant: TemplateGrant
    email: str


@attrs.frozen
class Found:
    """A template the caller may act on, and what they may do with it."""

    template: Template
    rights: TemplateRight


def rights_named(names: Sequence[str]) -> TemplateRight:
    """Rights from names (view, execute, update, delete, invite); ``Invalid`` otherwise."""
    rights = TemplateRight(0)
    for name in names:
        for part in name.split(","):
            key = part.strip().lower()
            if not key:
                continue
            if key not in RIGHT_NAMES:
                raise Invalid(
                    f"unknown template right {part.strip()!r}",
                    errors=(FieldError("rights", f"expected some of: {', '.join(RIGHT_NAMES)}"),),
                )
            rights |= RIGHT_NAMES[key]
    if not rights:
        raise Invalid("name at least one right", errors=(FieldError("rights", "is required"),))
    return rights


def right_names(rights: TemplateRight) -> list[str]:
    return [name for name, right in RIGHT_NAMES.items() if right & rights]


# ---------------------------------------------------------------- finding and authorising


async def resolve_template(
    p: Platform,
    uow: UnitOfWork,
    caller: Caller,
    ref: str,
    org_ref: str | None,
    right: TemplateRight,
    *,
    verb: str,
    access: Access | None = None,
) -> Found:
    """The template named ``ref`` (id or name), if the caller holds ``right`` on it.

    With ``org_ref`` a name is looked up among the org's templates first, then among the
    caller's personal ones; without it, among personal ones only (an id finds either kind).
    A template the caller may not see answers ``NotFound`` like a missing one. ``access`` is
    the caller's access to an org the caller authorised in this unit of work already: what
    it holds is not read again.
    """
    user_id = user_of(caller)

    def known(org_id: str) -> Access | None:
        return access if access is not None and access.org.id == org_id else None

    def missing(resource_id: str, reason: str) -> Hidden:
        # Audited when the unit of work closes, like every refusal (see ``unit_of_work``).
        return hidden(
            f"template {ref} not found",
            "template_not_found",
            Pending(caller, verb, "template", resource_id, None, reason),
        )

    template: Template | None = None
    authorised = known(org_ref) if org_ref is not None else None
    if authorised is not None:
        # The org is authorised already: the id and a name in it are looked up at once.
        with contextlib.suppress(NotFound):
            template = await uow.templates.in_org(ref, authorised.org.id)
    else:
        with contextlib.suppress(NotFound):
            template = await uow.templates.get(ref)
        if template is None and org_ref is not None:
            org = await authorize(p, uow, caller, org_ref, None, None, verb=verb)
            with contextlib.suppress(NotFound):
                template = await uow.templates.by_name(ref, org_id=org.org.id)
    if template is None:
        try:
            template = await uow.templates.by_name(ref, owner_id=user_id)
        except NotFound:
            named = [t for t in await uow.templates.shared_with(user_id) if t.name == ref]
            if len(named) > 1:
                raise Conflict(
                    f"several templates shared with you are named {ref}; use its id",
                    code="template_ambiguous",
                ) from None
            if not named:
                raise missing(ref, "not found") from None
            template = named[0]
    if template.org_id is not None:
        action = ORG_ACTION.get(right)
        if action is None:
            raise Invalid(
                "org templates follow the org's roles; they are not shared user by user",
                errors=(FieldError("template", "is an org template; manage access with roles"),),
            )
        member = known(template.org_id)
        if member is None:
            try:
                member = await authorize(p, uow, caller, template.org_id, None, None, verb=verb)
            except Hidden as exc:
                raise missing(template.id, exc.pending.reason) from None
        member = await permit(uow, caller, member, action, Resource.TEMPLATES, verb=verb)
        return Found(template, _rights_of(member.roles or ()))
    try:
        grant = await uow.templates.grant_of(template.id, user_id)
    except NotFound:
        raise missing(template.id, "not shared with the caller") from None
    if not grant.rights & right:
        label = right_names(right)[0]
        raise Refused(
            f"you may not {label} template {template.name}: "
            f"you hold {', '.join(right_names(grant.rights)) or 'no rights'}",
            Pending(caller, verb, "template", template.id, None, f"no {label} right"),
        )
    return Found(template, grant.rights)


def hidden(message: str, code: str, pending: Pending) -> Hidden:
    """A refusal answered like a missing thing (``code`` names what is "missing")."""
    exc = Hidden(message, pending)
    exc.code = code
    return exc


# ---------------------------------------------------------------- templates


def check_size(text: str, source: str) -> None:
    """Refuse a template text larger than a template may be."""
    if len(text.encode()) > MAX_CONTENT:
        raise Invalid(
            f"{source} is too large",
            errors=(FieldError("content", f"at most {MAX_CONTENT} bytes", source),),
        )


async def submit_template(
    p: Platform,
    caller: Caller,
    text: str,
    *,
    read: TemplateReader,
    source: str = "<input>",
    org_ref: str | None = None,
) -> TemplateView:
    """Store a new template (version 1, the default) or a new version of the one of that name.

    The stored content is the submitted text. A personal template belongs to the caller, who
    holds every right on it; an org template needs templates:create (templates:update for a
    new version).
    """
    user_id = user_of(caller)
    check_size(text, source)
    resource = await parse(read, text, source)
    name = resource.metadata.name
    now = p.clock.now()
    async with unit_of_work(p) as uow:
        org_id = None
        if org_ref is not None:
            access = await authorize(
                p, uow, caller, org_ref, Action.VIEW, Resource.TEMPLATES, verb="template.submit"
            )
            org_id = access.org.id
        try:
            existing = await uow.templates.by_name(
                name, org_id=org_id, owner_id=None if org_id else user_id
            )
        except NotFound:
            existing = None
        if org_id is not None:
            action = Action.CREATE if existing is None else Action.UPDATE
            await authorize(
                p, uow, caller, org_id, action, Resource.TEMPLATES, verb="template.submit"
            )
        if existing is None:
            template = Template(
                id=p.ids.new_id(),
                name=name,
                created_at=now,
                org_id=org_id,
                owner_id=None if org_id else user_id,
                description=resource.description,
            )
            version = TemplateVersion(template.id, 1, text, now, created_by=user_id)
            await uow.templates.add(template, version)
            if org_id is None:
                await uow.templates.grant(
                    TemplateGrant(template.id, user_id, ALL_TEMPLATE_RIGHTS, now, user_id)
                )
        else:
            number = existing.latest_version + 1
            version = TemplateVersion(existing.id, number, text, now, created_by=user_id)
            await uow.templates.add_version(version)
            template = attrs.evolve(
                existing, latest_version=number, description=resource.description
            )
            await uow.templates.update(template)
        rights = await _rights_in_org(uow, org_id, user_id) if org_id else ALL_TEMPLATE_RIGHTS
        await record(
            p,
            caller,
            "template.submit",
            "template",
            template.id,
            org_id=org_id,
            data={"name": name, "version": str(version.version)},
            uow=uow,
        )
        await uow.commit()
    return TemplateView(template, rights, version)


async def _rights_in_org(uow: UnitOfWork, org_id: str, user_id: str) -> TemplateRight:
    return _rights_of(await roles_of(uow, org_id, user_id))


def _rights_of(roles: Sequence[Role]) -> TemplateRight:
    rights = TemplateRight(0)
    for right, action in ORG_ACTION.items():
        if decide(roles, action, Resource.TEMPLATES):
            rights |= right
    return rights


async def list_templates(
    p: Platform, caller: Caller, org_ref: str | None = None
) -> list[TemplateView]:
    """An org's templates (needs templates:view), or the caller's own and shared ones."""
    user_id = user_of(caller)
    async with unit_of_work(p) as uow:
        if org_ref is not None:
            access = await authorize(
                p, uow, caller, org_ref, Action.VIEW, Resource.TEMPLATES, verb="template.list"
            )
            rights = await _rights_in_org(uow, access.org.id, user_id)
            return [TemplateView(t, rights) for t in await uow.templates.list(org_id=access.org.id)]
        views = []
        for t in await uow.templates.shared_with(user_id):
            grant = await uow.templates.grant_of(t.id, user_id)
            if grant.rights & TemplateRight.VIEW:
                views.append(TemplateView(t, grant.rights))
        return views


async def get_template(
    p: Platform, caller: Caller, ref: str, org_ref: str | None = None, version: int | None = None
) -> TemplateView:
    """The template with the content of its default version, or of ``version``."""
    async with unit_of_work(p) as uow:
        found = await resolve_template(
            p, uow, caller, ref, org_ref, TemplateRight.VIEW, verb="template.get"
        )
        number = found.template.default_version if version is None else version
        content = await _version(uow, found.template, number)
        return TemplateView(found.template, found.rights, content)


async def _version(uow: UnitOfWork, template: Template, number: int) -> TemplateVersion:
    try:
        return await uow.templates.version(template.id, number)
    except NotFound:
        raise NotFound(
            f"template {template.name} has no version {number} (latest: {template.latest_version})",
            code="template_version_not_found",
        ) from None


async def list_versions(
    p: Platform, caller: Caller, ref: str, org_ref: str | None = None
) -> tuple[Template, list[TemplateVersion]]:
    async with unit_of_work(p) as uow:
        found = await resolve_template(
            p, uow, caller, ref, org_ref, TemplateRight.VIEW, verb="template.versions"
        )
        return found.template, await uow.templates.versions(found.template.id)


async def set_default_version(
    p: Platform, caller: Caller, ref: str, version: int, org_ref: str | None = None
) -> TemplateView:
    """Make ``version`` the one runs use (needs the update right)."""
    async with unit_of_work(p) as uow:
        found = await resolve_template(
            p, uow, caller, ref, org_ref, TemplateRight.UPDATE, verb="template.default_version"
        )
        chosen = await _version(uow, found.template, version)
        template = attrs.evolve(found.template, default_version=version)
        await uow.templates.update(template)
        await record(
            p,
            caller,
            "template.default_version",
            "template",
            template.id,
            org_id=template.org_id,
            data={"version": str(version), "previous": str(found.template.default_version)},
            uow=uow,
        )
        await uow.commit()
    return TemplateView(template, found.rights, chosen)


async def delete_template(
    p: Platform, caller: Caller, ref: str, org_ref: str | None = None
) -> Template:
    """Remove the template with its versions and shares; past runs keep their snapshot."""
    async with unit_of_work(p) as uow:
        found = await resolve_template(
            p, uow, caller, ref, org_ref, TemplateRight.DELETE, verb="template.delete"
        )
        await uow.templates.delete(found.template.id)
        await record(
            p,
            caller,
            "template.delete",
            "template",
            found.template.id,
            org_id=found.template.org_id,
            data={"name": found.template.name},
            uow=uow,
        )
        await uow.commit()
    return found.template


# ---------------------------------------------------------------- sharing personal templates


async def invite_user(
    p: Platform, caller: Caller, ref: str, email: str, rights: TemplateRight
) -> TemplateInvitation:
    """Share a personal template: a join code goes to ``email`` and is stored hashed.

    Needs the invite right, and nobody hands out a right they do not hold themselves.
    """
    email = normalise_email(email)
    async with unit_of_work(p) as uow:
        found = await resolve_template(
            p, uow, caller, ref, None, TemplateRight.INVITE, verb="template.invite"
        )
        template = found.template
        extra = rights & ~found.rights
        if extra:
            raise Forbidden(
                f"you cannot hand out {', '.join(right_names(extra))}: you do not hold it",
                code="insufficient_template_rights",
            )
        try:
            invitee = await uow.users.by_email(email)
        except NotFound:
            invitee = None
        if invitee is not None:
            try:
                await uow.templates.grant_of(template.id, invitee.id)
            except NotFound:
                pass
            else:
                raise Conflict(
                    f"{email} already has access to template {template.name}",
                    code="template_user_exists",
                )
        now = p.clock.now()
        for old in await uow.templates.invitations_for(email):
            if old.template_id != template.id:
                continue
            if old.expires_at > now:
                raise Conflict(
                    f"{email} already has a pending invitation to template {template.name}",
                    code="invitation_exists",
                )
            # An expired invitation must not block a fresh one.
            await uow.templates.update_invitation(
                attrs.evolve(old, status=TemplateInvitationStatus.CANCELLED, answered_at=now)
            )
        code = p.secrets.new_token(TEMPLATE_CODE_PREFIX)
        invitation = TemplateInvitation(
            id=p.ids.new_id(),
            template_id=template.id,
            email=email,
            rights=rights,
            inviter_id=user_of(caller),
            code_hash=p.secrets.hash(code),
            created_at=now,
            expires_at=now + timedelta(seconds=p.limits.invitation_seconds),
        )
        await uow.templates.add_invitation(invitation)
        await uow.commit()
    await p.mailer.send(
        Email(
            to=email,
            subject=f"A runbook template is shared with you on Opsicle: {template.name}",
            text=(
                f"{caller.email or 'Someone'} shared the template {template.name} with you "
                f"({', '.join(right_names(rights))}).\n\n"
                f"Your join code: {code}\n\n"
                f"Log in with this email address and run:\n"
                f"  opsicle join template --code {code}\n\n"
                f"The code works once and expires at {invitation.expires_at.isoformat()}.\n"
            ),
        )
    )
    await record(
        p,
        caller,
        "template.invite",
        "template_invitation",
        invitation.id,
        data={"template": template.id, "email": email, "rights": ",".join(right_names(rights))},
    )
    return invitation


async def _my_invitation(
    p: Platform, uow: UnitOfWork, caller: Caller, code: str
) -> TemplateInvitation:
    nobody = NotFound("no pending template invitation to you matches", code="invitation_invalid")
    if not code.strip():
        raise Invalid("name the invitation", errors=(FieldError("code", "is required"),))
    try:
        invitation = await uow.templates.invitation_by_code_hash(p.secrets.hash(code.strip()))
    except NotFound:
        raise nobody from None
    # Only the addressee may answer; anyone else learns nothing about the invitation.
    if (
        invitation.email.lower() != caller.email.lower()
        or invitation.status is not TemplateInvitationStatus.PENDING
    ):
        raise nobody
    if invitation.expires_at <= p.clock.now():
        raise Conflict("the invitation has expired; ask for a new one", code="invitation_expired")
    return invitation


async def accept_invitation(p: Platform, caller: Caller, code: str) -> TemplateView:
    """Take the shared rights; the template then shows among the caller's templates."""
    user_id = user_of(caller)
    now = p.clock.now()
    async with unit_of_work(p) as uow:
        invitation = await _my_invitation(p, uow, caller, code)
        template = await uow.templates.get(invitation.template_id)
        try:
            held = (await uow.templates.grant_of(template.id, user_id)).rights
        except NotFound:
            held = TemplateRight(0)
        rights = held | invitation.rights
        await uow.templates.grant(
            TemplateGrant(template.id, user_id, rights, now, invitation.inviter_id)
        )
        await uow.templates.update_invitation(
            attrs.evolve(invitation, status=TemplateInvitationStatus.ACCEPTED, answered_at=now)
        )
        await record(
            p,
            caller,
            "template.join",
            "template_invitation",
            invitation.id,
            data={"template": template.id},
            uow=uow,
        )
        await uow.commit()
    return TemplateView(template, rights)


async def reject_invitation(p: Platform, caller: Caller, code: str) -> TemplateInvitation:
    user_of(caller)
    async with unit_of_work(p) as uow:
        invitation = await _my_invitation(p, uow, caller, code)
        invitation = attrs.evolve(
            invitation, status=TemplateInvitationStatus.REJECTED, answered_at=p.clock.now()
        )
        await uow.templates.update_invitation(invitation)
        await record(
            p,
            caller,
            "template.reject",
            "template_invitation",
            invitation.id,
            data={"template": invitation.template_id},
            uow=uow,
        )
        await uow.commit()
    return invitation


async def list_users(p: Platform, caller: Caller, ref: str) -> list[TemplateUser]:
    """Who holds which rights on a personal template (needs the view right)."""
    async with unit_of_work(p) as uow:
        found = await resolve_template(
            p, uow, caller, ref, None, TemplateRight.VIEW, verb="template.users"
        )
        if found.template.org_id is not None:
            raise _org_template(found.template)
        users = []
        for grant in await uow.templates.grants(found.template.id):
            try:
                email = (await uow.users.get(grant.user_id)).email
            except NotFound:
                email = ""
            users.append(TemplateUser(grant, email))
        return users


async def remove_user(p: Platform, caller: Caller, ref: str, user_ref: str) -> TemplateUser:
    """Take a user's access away (needs the invite right, unless they remove themselves).

    The last user holding the invite right stays: someone must be able to share it.
    """
    user_id = user_of(caller)
    async with unit_of_work(p) as uow:
        found = await resolve_template(
            p, uow, caller, ref, None, TemplateRight.VIEW, verb="template.remove_user"
        )
        template = found.template
        if template.org_id is not None:
            raise _org_template(template)
        target_id = user_ref
        if "@" in user_ref:
            try:
                target_id = (await uow.users.by_email(user_ref.strip())).id
            except NotFound:
                target_id = ""
        if target_id != user_id and not found.rights & TemplateRight.INVITE:
            raise Forbidden(
                f"removing users from template {template.name} needs the invite right",
                code="insufficient_template_rights",
            )
        grants = await uow.templates.grants(template.id)
        target = next((g for g in grants if g.user_id == target_id), None)
        if target is None:
            raise NotFound(
                f"{user_ref} has no access to template {template.name}",
                code="template_user_not_found",
            )
        inviters = [g for g in grants if g.rights & TemplateRight.INVITE]
        if target.rights & TemplateRight.INVITE and len(inviters) == 1:
            raise Conflict(
                f"{user_ref} is the last user who may invite others to template "
                f"{template.name}; give someone else the invite right first",
                code="last_inviter",
            )
        await uow.templates.revoke(template.id, target.user_id)
        try:
            email = (await uow.users.get(target.user_id)).email
        except NotFound:
            email = ""
        await record(
            p,
            caller,
            "template.remove_user",
            "template",
            template.id,
            data={"user": target.user_id},
            uow=uow,
        )
        await uow.commit()
    return TemplateUser(target, email)


def _org_template(template: Template) -> Invalid:
    return Invalid(
        f"template {template.name} belongs to an org; its access follows the org's roles",
        errors=(FieldError("template", "is an org template; manage access with roles"),),
    )
