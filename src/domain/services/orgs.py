"""Organisation use cases: create, find, delete; invitations; members and their types."""

from __future__ import annotations

from datetime import timedelta

import attrs

from domain.errors import Conflict, FieldError, Invalid, NotFound
from domain.orgs import (
    Invitation,
    InvitationStatus,
    Membership,
    MemberType,
    Organisation,
    check_org,
)
from domain.permissions import (
    ADMINISTRATOR_ROLE,
    Action,
    Resource,
    Role,
    decide,
    default_roles,
)
from domain.ports import Email, UnitOfWork
from domain.services.authorization import authorize, unit_of_work, user_of
from domain.services.platform import Caller, Platform, record
from domain.users import User, normalise_email

INVITE_CODE_PREFIX = "join-"


@attrs.frozen
class MemberView:
    membership: Membership
    email: str
    roles: tuple[Role, ...]


@attrs.frozen
class InvitationView:
    invitation: Invitation
    org: Organisation


@attrs.frozen
class MyOrg:
    org: Organisation
    membership: Membership


# ---------------------------------------------------------------- organisations


async def create_org(p: Platform, caller: Caller, name: str, code: str) -> Organisation:
    """A new org; the creator becomes its admin with the Administrator role."""
    user_id = user_of(caller)
    name, code = name.strip(), code.strip()
    check_org(name, code)
    now = p.clock.now()
    org = Organisation(p.ids.new_id(), name, code, now, created_by=user_id)
    admin, worker = default_roles(org.id, p.ids.new_id(), p.ids.new_id())
    async with unit_of_work(p) as uow:
        try:
            await uow.orgs.by_code(code)
        except NotFound:
            pass
        else:
            raise Conflict(f"the organisation code {code} is taken", code="org_exists")
        await uow.orgs.add(org)
        await uow.orgs.add_member(Membership(org.id, user_id, MemberType.ADMIN, now))
        await uow.roles.add(admin)
        await uow.roles.add(worker)
        await uow.roles.assign(org.id, user_id, admin.id)
        await record(
            p, caller, "org.create", "org", org.id, org_id=org.id, data={"code": org.code}, uow=uow
        )
        await uow.commit()
    return org


async def get_org(p: Platform, caller: Caller, ref: str) -> MyOrg:
    async with unit_of_work(p) as uow:
        access = await authorize(p, uow, caller, ref, None, None, verb="org.get")
    return MyOrg(access.org, access.member)


async def list_orgs(p: Platform, caller: Caller) -> list[MyOrg]:
    user_id = user_of(caller)
    async with unit_of_work(p) as uow:
        return [
            MyOrg(o, await uow.orgs.member(o.id, user_id)) for o in await uow.orgs.of_user(user_id)
        ]


async def delete_org(p: Platform, caller: Caller, ref: str) -> Organisation:
    async with unit_of_work(p) as uow:
        access = await authorize(
            p, uow, caller, ref, Action.DELETE, Resource.ORG, verb="org.delete"
        )
        await uow.orgs.delete(access.org.id)
        await record(
            p,
            caller,
            "org.delete",
            "org",
            access.org.id,
            org_id=access.org.id,
            data={"code": access.org.code},
            uow=uow,
        )
        await uow.commit()
    return access.org


# ---------------------------------------------------------------- invitations


async def invite(
    p: Platform, caller: Caller, ref: str, email: str, member_type: MemberType = MemberType.MEMBER
) -> Invitation:
    """Invite ``email``; the join code goes to that address only and is stored hashed.

    Inviting an admin hands out the Administrator role, so it needs ``org_user:manage``.
    """
    email = normalise_email(email)
    async with unit_of_work(p) as uow:
        access = await authorize(
            p, uow, caller, ref, Action.CREATE, Resource.ORG_USER, verb="org.invite"
        )
        if member_type is MemberType.ADMIN:
            await authorize(
                p, uow, caller, access.org.id, Action.MANAGE, Resource.ORG_USER, verb="org.invite"
            )
        org = access.org
        invitee = await _user_by_email(uow, email)
        if invitee is not None and await _is_member(uow, org.id, invitee.id):
            raise Conflict(f"{email} is already a member of {org.code}", code="user_exists_in_org")
        now = p.clock.now()
        for old in await uow.invitations.for_email(email):
            if old.org_id == org.id and old.expires_at <= now:
                # An expired invitation must not block a fresh one.
                await uow.invitations.update(
                    attrs.evolve(old, status=InvitationStatus.CANCELLED, answered_at=now)
                )
            elif old.org_id == org.id:
                raise Conflict(
                    f"{email} already has a pending invitation to {org.code}; "
                    "cancel it first to send a new one",
                    code="invitation_exists",
                )
        code = p.secrets.new_token(INVITE_CODE_PREFIX)
        invitation = Invitation(
            id=p.ids.new_id(),
            org_id=org.id,
            email=email,
            member_type=member_type,
            inviter_id=access.member.user_id,
            code_hash=p.secrets.hash(code),
            created_at=now,
            expires_at=now + timedelta(seconds=p.limits.invitation_seconds),
        )
        await uow.invitations.add(invitation)
        await uow.commit()
    await p.mailer.send(
        Email(
            to=email,
            subject=f"You are invited to join {org.name} on Opsicle",
            text=(
                f"{caller.email or 'Someone'} invited you to join the organisation {org.name} "
                f"({org.code}) as {member_type.value}.\n\n"
                f"Your join code: {code}\n\n"
                f"Log in with this email address and run:\n"
                f"  opsicle join org --code {code}\n\n"
                f"The code works once and expires at {invitation.expires_at.isoformat()}.\n"
            ),
        )
    )
    await record(
        p,
        caller,
        "org.invite",
        "invitation",
        invitation.id,
        org_id=org.id,
        data={"email": email, "memberType": member_type.value},
    )
    return invitation


async def org_invitations(p: Platform, caller: Caller, ref: str) -> list[Invitation]:
    async with unit_of_work(p) as uow:
        access = await authorize(
            p, uow, caller, ref, Action.VIEW, Resource.ORG_USER, verb="org.invitations"
        )
        return await uow.invitations.of_org(access.org.id)


async def cancel_invitation(
    p: Platform, caller: Caller, ref: str, invitation_id: str
) -> Invitation:
    async with unit_of_work(p) as uow:
        access = await authorize(
            p, uow, caller, ref, Action.DELETE, Resource.ORG_USER, verb="invitation.cancel"
        )
        try:
            invitation = await uow.invitations.get(invitation_id)
        except NotFound:
            invitation = None
        if invitation is None or invitation.org_id != access.org.id:
            raise NotFound(f"invitation {invitation_id} not found")
        if invitation.status is not InvitationStatus.PENDING:
            raise Conflict(
                f"the invitation is already {invitation.status.value}", code="invitation_answered"
            )
        invitation = attrs.evolve(
            invitation, status=InvitationStatus.CANCELLED, answered_at=p.clock.now()
        )
        await uow.invitations.update(invitation)
        await record(
            p, caller, "invitation.cancel", "invitation", invitation.id, org_id=invitation.org_id,
            uow=uow,
        )
        await uow.commit()
    return invitation


async def my_invitations(p: Platform, caller: Caller) -> list[InvitationView]:
    """Pending, unexpired invitations addressed to the caller's email."""
    user_of(caller)
    now = p.clock.now()
    async with unit_of_work(p) as uow:
        found = await uow.invitations.for_email(caller.email) if caller.email else []
        return [
            InvitationView(i, await uow.orgs.get(i.org_id)) for i in found if i.expires_at > now
        ]


async def _mine(
    p: Platform, uow: UnitOfWork, caller: Caller, code: str | None, invitation_id: str | None
) -> Invitation:
    """The pending invitation to the caller that the code (and id, when given) name."""
    nobody = NotFound("no pending invitation to you matches", code="invitation_invalid")
    if not code and not invitation_id:
        raise Invalid(
            "name the invitation",
            errors=(FieldError("code", "give the join code (or the invitation id)"),),
        )
    try:
        if code:
            invitation = await uow.invitations.by_code_hash(p.secrets.hash(code.strip()))
            if invitation_id and invitation.id != invitation_id:
                raise nobody
        else:
            invitation = await uow.invitations.get(str(invitation_id))
    except NotFound:
        raise nobody from None
    # Only the addressee may answer; anyone else learns nothing about the invitation.
    if (
        invitation.email.lower() != caller.email.lower()
        or invitation.status is not InvitationStatus.PENDING
    ):
        raise nobody
    if invitation.expires_at <= p.clock.now():
        raise Conflict("the invitation has expired; ask for a new one", code="invitation_expired")
    return invitation


async def accept_invitation(
    p: Platform, caller: Caller, code: str, invitation_id: str | None = None
) -> MyOrg:
    """Join the org with the invited member type; an admin gets the Administrator role."""
    user_id = user_of(caller)
    now = p.clock.now()
    async with unit_of_work(p) as uow:
        invitation = await _mine(p, uow, caller, code, invitation_id)
        if not code:
            raise Invalid(
                "accepting needs the join code",
                errors=(FieldError("code", "is required to accept"),),
            )
        org = await uow.orgs.get(invitation.org_id)
        if await _is_member(uow, org.id, user_id):
            raise Conflict(f"you are already a member of {org.code}", code="user_exists_in_org")
        membership = Membership(org.id, user_id, invitation.member_type, now)
        await uow.orgs.add_member(membership)
        if invitation.member_type is MemberType.ADMIN:
            await uow.roles.assign(org.id, user_id, (await _admin_role(uow, org.id)).id)
        await uow.invitations.update(
            attrs.evolve(invitation, status=InvitationStatus.ACCEPTED, answered_at=now)
        )
        await record(
            p, caller, "invitation.accept", "invitation", invitation.id, org_id=org.id, uow=uow
        )
        await uow.commit()
    return MyOrg(org, membership)


async def reject_invitation(
    p: Platform, caller: Caller, code: str | None, invitation_id: str | None = None
) -> Invitation:
    user_of(caller)
    async with unit_of_work(p) as uow:
        invitation = await _mine(p, uow, caller, code, invitation_id)
        invitation = attrs.evolve(
            invitation, status=InvitationStatus.REJECTED, answered_at=p.clock.now()
        )
        await uow.invitations.update(invitation)
        await record(
            p, caller, "invitation.reject", "invitation", invitation.id, org_id=invitation.org_id,
            uow=uow,
        )
        await uow.commit()
    return invitation


# ---------------------------------------------------------------- members


async def list_members(p: Platform, caller: Caller, ref: str) -> list[MemberView]:
    async with unit_of_work(p) as uow:
        access = await authorize(
            p, uow, caller, ref, Action.VIEW, Resource.ORG_USER, verb="org.members"
        )
        return [await _view(uow, m) for m in await uow.orgs.members(access.org.id)]


async def get_member(p: Platform, caller: Caller, ref: str, user_ref: str) -> MemberView:
    async with unit_of_work(p) as uow:
        access = await authorize(
            p, uow, caller, ref, Action.VIEW, Resource.ORG_USER, verb="org.member"
        )
        return await _view(uow, await find_member(uow, access.org, user_ref))


async def change_member_type(
    p: Platform, caller: Caller, ref: str, user_ref: str, member_type: MemberType
) -> MemberView:
    """Change the NAMED member's type; making or unmaking an admin needs ``org_user:manage``
    and moves the Administrator role with it; the last admin cannot be demoted."""
    async with unit_of_work(p) as uow:
        access = await authorize(
            p, uow, caller, ref, Action.UPDATE, Resource.ORG_USER, verb="member.update"
        )
        await uow.orgs.lock(access.org.id)
        target = await find_member(uow, access.org, user_ref)
        before = target.type
        if MemberType.ADMIN in (before, member_type) and before is not member_type:
            await authorize(
                p,
                uow,
                caller,
                access.org.id,
                Action.MANAGE,
                Resource.ORG_USER,
                verb="member.update",
            )
            admin_role = await _admin_role(uow, access.org.id)
            if before is MemberType.ADMIN:
                await _keep_an_admin(uow, access.org, target.user_id, "demote")
                await uow.roles.unassign(access.org.id, target.user_id, admin_role.id)
            else:
                await uow.roles.assign(access.org.id, target.user_id, admin_role.id)
        target = attrs.evolve(target, type=member_type)
        await uow.orgs.update_member(target)
        await keep_a_manager(uow, access.org)
        view = await _view(uow, target)
        await record(
            p,
            caller,
            "member.update",
            "org_user",
            target.user_id,
            org_id=access.org.id,
            data={"from": before.value, "to": member_type.value},
            uow=uow,
        )
        await uow.commit()
    return view


async def remove_member(p: Platform, caller: Caller, ref: str, user_ref: str) -> Membership:
    """Remove the NAMED member (never the requester unless named); keep the last admin."""
    async with unit_of_work(p) as uow:
        access = await authorize(
            p, uow, caller, ref, Action.DELETE, Resource.ORG_USER, verb="member.remove"
        )
        await uow.orgs.lock(access.org.id)
        target = await find_member(uow, access.org, user_ref)
        if target.type is MemberType.ADMIN:
            await _keep_an_admin(uow, access.org, target.user_id, "remove")
        await uow.orgs.remove_member(access.org.id, target.user_id)
        await keep_a_manager(uow, access.org)
        await record(
            p, caller, "member.remove", "org_user", target.user_id, org_id=access.org.id, uow=uow
        )
        await uow.commit()
    return target


async def leave_org(p: Platform, caller: Caller, ref: str) -> Membership:
    async with unit_of_work(p) as uow:
        access = await authorize(p, uow, caller, ref, None, None, verb="member.leave")
        await uow.orgs.lock(access.org.id)
        if access.member.type is MemberType.ADMIN:
            await _keep_an_admin(uow, access.org, access.member.user_id, "leave")
        await uow.orgs.remove_member(access.org.id, access.member.user_id)
        await keep_a_manager(uow, access.org)
        await record(
            p, caller, "member.leave", "org_user", access.member.user_id,
            org_id=access.org.id, uow=uow
        )
        await uow.commit()
    return access.member


# ---------------------------------------------------------------- helpers


async def find_member(uow: UnitOfWork, org: Organisation, user_ref: str) -> Membership:
    """A member of ``org`` named by user id or email."""
    missing = NotFound(f"{user_ref} is not a member of {org.code}", code="member_not_found")
    user_id = user_ref
    if "@" in user_ref:
        user = await _user_by_email(uow, user_ref.strip())
        if user is None:
            raise missing
        user_id = user.id
    try:
        return await uow.orgs.member(org.id, user_id)
    except NotFound:
        raise missing from None


async def _keep_an_admin(uow: UnitOfWork, org: Organisation, user_id: str, verb: str) -> None:
    """Refuse to take the org's last admin (the org locked, see ``keep_a_manager``)."""
    admins = [m for m in await uow.orgs.members(org.id) if m.type is MemberType.ADMIN]
    if [m.user_id for m in admins] == [user_id]:
        who = "you are" if verb == "leave" else "they are"
        raise Conflict(
            f"cannot {verb}: {who} the last admin of {org.code}; make another member admin first",
            code="last_org_admin",
        )


async def keep_a_manager(uow: UnitOfWork, org: Organisation) -> None:
    """Refuse a change (made in ``uow``, not committed) after which no member could manage
    the org's members and roles: nobody could ever repair it.

    The caller locks the org (``uow.orgs.lock``) before the change's first write, so two
    changes at once do not each count on a member the other takes away, and take their locks
    in one order."""
    for member in await uow.orgs.members(org.id):
        if decide(await uow.roles.of_member(org.id, member.user_id),
                  Action.MANAGE, Resource.ORG_USER):
            return
    raise Conflict(
        f"refused: afterwards no member of {org.code} could manage its members and roles "
        f"({Resource.ORG_USER.value}:{Action.MANAGE.name.lower()})",
        code="no_org_manager",
    )


async def _admin_role(uow: UnitOfWork, org_id: str) -> Role:
    for role in await uow.roles.of_org(org_id):
        if role.builtin and role.name == ADMINISTRATOR_ROLE:
            return role
    raise NotFound("the organisation has no Administrator role")


async def _view(uow: UnitOfWork, m: Membership) -> MemberView:
    user = await uow.users.get(m.user_id)
    return MemberView(m, user.email, tuple(await uow.roles.of_member(m.org_id, m.user_id)))


async def _user_by_email(uow: UnitOfWork, email: str) -> User | None:
    try:
        return await uow.users.by_email(email)
    except NotFound:
        return None


async def _is_member(uow: UnitOfWork, org_id: str, user_id: str) -> bool:
    try:
        await uow.orgs.member(org_id, user_id)
    except NotFound:
        return False
    return True
