"""Org commands: orgs, invitations, members, roles, worker tokens, permissions and audit logs."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from cyclopts import App, Parameter

from domain.errors import FieldError, Invalid
from domain.orgs import MemberType
from entrypoints.cli import verbs
from entrypoints.cli.client import current, run, say, show
from entrypoints.exitcodes import ExitCode

if TYPE_CHECKING:
    from adapters.http.controller_client import ControllerClient
    from adapters.http.orgs_client import OrgsClient
    from adapters.http.schemas.orgs import GrantSpec, IssuedSecret

ControllerUrl = Annotated[
    str | None,
    Parameter(
        help="Controller to talk to. Default: OPSICLE_CONTROLLER_URL, the config file, "
        "or http://127.0.0.1:13371"
    ),
]
OrgRef = Annotated[str, Parameter(help="The organisation, by code or id.")]
OrgOption = Annotated[str, Parameter(name="--org", help="The organisation, by code or id.")]
OutputDir = Annotated[
    Path | None,
    Parameter(
        help="Write the token to files here (mode 0600) instead of printing it: "
        "<id>.token holds the secret, <id>.env holds OPSICLE_TOKEN_ID and OPSICLE_TOKEN."
    ),
]
Grants = Annotated[
    list[str] | None,
    Parameter(
        help="RESOURCE=ACTION,ACTION (repeatable). Actions: create, view, update, "
        "delete, execute, manage. Resources: org, org_user, org_config, org_billing, "
        "templates, automations, automation_logs."
    ),
]

ORG_COLUMNS = ("code", "name", "id", "memberType", "joinedAt")
MEMBER_COLUMNS = ("email", "userId", "type", "roles", "joinedAt")
ROLE_COLUMNS = ("name", "id", "builtin", "grants")
TOKEN_COLUMNS = ("name", "id", "active", "roles", "createdAt", "revokedAt", "rotatedAt")
INVITATION_COLUMNS = ("id", "email", "memberType", "status", "expiresAt")
MY_INVITATION_COLUMNS = ("id", "orgCode", "orgName", "memberType", "expiresAt")
AUDIT_COLUMNS = ("at", "actor", "verb", "resourceType", "resourceId", "outcome", "sourceIp")

org_create = App(name="org", help="Create an organisation (or, below it, a role or a token).")
org_get = App(name="org", help="Show an organisation (or, below it, a worker token).")
org_list = App(name="org", help="List an organisation's members, invitations, roles or tokens.")
org_update = App(name="org", help="Change an organisation's member or role.")
org_remove = App(name="org", help="Delete an organisation (or, below it, a member or a role).")
org_assign = App(name="org", help="Give a role to an org member or token.")
org_unassign = App(name="org", help="Take a role from an org member or token.")
org_revoke = App(name="org", help="Revoke an org's worker token.")
org_rotate = App(name="org", help="Rotate an org's worker token.")
for verb, sub in (
    (verbs.create, org_create),
    (verbs.get, org_get),
    (verbs.list_, org_list),
    (verbs.update, org_update),
    (verbs.remove, org_remove),
    (verbs.assign, org_assign),
    (verbs.unassign, org_unassign),
    (verbs.revoke, org_revoke),
    (verbs.rotate, org_rotate),
):
    verb.command(sub)


def _orgs(client: ControllerClient) -> OrgsClient:
    from adapters.http.orgs_client import OrgsClient

    return OrgsClient(client)


def _rows(items: list[Any]) -> list[dict[str, Any]]:
    """Wire objects as table rows: role lists and grants shortened to one readable cell."""
    from adapters.serialization import to_json

    rows = []
    for item in items:
        row = dict(to_json(item))
        if isinstance(row.get("roles"), list):
            row["roles"] = ", ".join(r["name"] for r in row["roles"])
        if isinstance(row.get("grants"), dict):
            row["grants"] = _grants_text(row["grants"])
        rows.append(row)
    return rows


def _grants_text(grants: dict[str, Any]) -> str:
    parts = []
    for resource, g in grants.items():
        text = ",".join(g["allow"]) or "-"
        if g["deny"]:
            text += " deny " + ",".join(g["deny"])
        parts.append(f"{resource}={text}")
    return "; ".join(parts)


def _table(items: list[Any], columns: tuple[str, ...], title: str = "") -> None:
    if current()["output"] == "text":
        show(_rows(items), columns=columns, title=title)
    else:
        show(items)


# ---------------------------------------------------------------- organisations


@org_create.default
def create_org(
    name: Annotated[str, Parameter(help="Display name: 6-255 letters, digits, spaces, .,-&!():'")],
    /,
    *,
    code: Annotated[str, Parameter(help="Short unique code: 6-32 letters, digits or '-'.")],
    controller_url: ControllerUrl = None,
) -> int:
    """Create an organisation; you become its admin with the Administrator role."""
    org = run(controller_url, lambda c: _orgs(c).create(name, code))
    say(f"created organisation {org.code} ({org.id})")
    show(org)
    return 0


@org_get.default
def get_org(ref: OrgRef, /, *, controller_url: ControllerUrl = None) -> int:
    """Show an organisation you belong to, by code or id."""
    show(run(controller_url, lambda c: _orgs(c).get(ref)))
    return 0


@verbs.list_.command(name="orgs")
def list_orgs(*, controller_url: ControllerUrl = None) -> int:
    """List the organisations you belong to."""
    _table(run(controller_url, lambda c: _orgs(c).list_orgs()), ORG_COLUMNS)
    return 0


@org_remove.default
def remove_org(
    ref: OrgRef,
    /,
    *,
    yes: Annotated[bool, Parameter(help="Do not ask for confirmation.")] = False,
    controller_url: ControllerUrl = None,
) -> int:
    """Delete an organisation with its members, roles, tokens and invitations (needs
    org:delete). Asks you to type the code on a terminal; elsewhere pass --yes."""
    if not yes:
        if not sys.stdin.isatty():
            raise Invalid(
                "deleting an organisation needs confirmation",
                errors=(FieldError("yes", "pass --yes when not on a terminal"),),
            )
        typed = input(f"This deletes {ref} and everything in it. Type its code to confirm: ")
        org = run(controller_url, lambda c: _orgs(c).get(ref))
        if typed.strip().lower() != org.code.lower():
            say("not deleted")
            return int(ExitCode.CANCELLED)
    org = run(controller_url, lambda c: _orgs(c).delete(ref))
    say(f"deleted organisation {org.code}")
    return 0


# ---------------------------------------------------------------- invitations


def invite(
    email: Annotated[str, Parameter(help="Who to invite; the join code is emailed there.")],
    /,
    *,
    org: OrgOption,
    type: Annotated[MemberType, Parameter(help="Member type they join as.")] = MemberType.MEMBER,
    controller_url: ControllerUrl = None,
) -> int:
    """Invite someone to an organisation by email (the join code goes only to them)."""
    sent = run(controller_url, lambda c: _orgs(c).invite(org, email, type))
    say(
        f"invited {sent.email} to {org} as {sent.member_type.value}; "
        f"the join code was emailed to them (invitation {sent.id})"
    )
    show(sent)
    return 0


@org_list.command(name="invitations")
def list_org_invitations(*, org: OrgOption, controller_url: ControllerUrl = None) -> int:
    """List an organisation's invitations (pending and answered)."""
    _table(run(controller_url, lambda c: _orgs(c).invitations(org)), INVITATION_COLUMNS)
    return 0


@verbs.list_.command(name="invitations")
def list_invitations(*, controller_url: ControllerUrl = None) -> int:
    """List the pending invitations addressed to you."""
    _table(run(controller_url, lambda c: _orgs(c).my_invitations()), MY_INVITATION_COLUMNS)
    return 0


@verbs.join.command(name="org")
def join_org(
    *,
    code: Annotated[str | None, Parameter(help="The join code from the invitation email.")] = None,
    id: Annotated[
        str | None,
        Parameter(help="The invitation id (see 'opsicle list invitations')."),
    ] = None,
    reject: Annotated[bool, Parameter(help="Turn the invitation down instead.")] = False,
    controller_url: ControllerUrl = None,
) -> int:
    """Accept an invitation with its join code (asked for on a terminal), or --reject it."""
    if reject:
        if not code and not id:
            raise Invalid(
                "name the invitation to reject", errors=(FieldError("code", "give --code or --id"),)
            )
        answered = run(controller_url, lambda c: _orgs(c).reject(code, id))
        say(f"rejected invitation {answered.id}")
        show(answered)
        return 0
    if not code:
        if not sys.stdin.isatty():
            raise Invalid(
                "joining needs the join code",
                errors=(FieldError("code", "pass --code (it was emailed to you)"),),
            )
        import getpass

        code = getpass.getpass("Join code: ").strip()
    joined = run(controller_url, lambda c: _orgs(c).accept(code, id))
    say(f"joined {joined.code} as {joined.member_type.value}")
    show(joined)
    return 0


@verbs.leave.command(name="org")
def leave_org(ref: OrgRef, /, *, controller_url: ControllerUrl = None) -> int:
    """Leave an organisation (the last admin cannot)."""
    run(controller_url, lambda c: _orgs(c).leave(ref))
    say(f"left {ref}")
    return 0


# ---------------------------------------------------------------- members


@org_list.command(name="members")
def list_org_members(*, org: OrgOption, controller_url: ControllerUrl = None) -> int:
    """List an organisation's members with their types and roles."""
    _table(run(controller_url, lambda c: _orgs(c).members(org)), MEMBER_COLUMNS)
    return 0


User = Annotated[str, Parameter(help="The member, by email or user id.")]


@org_update.command(name="member")
def update_org_member(
    user: User,
    /,
    *,
    org: OrgOption,
    type: Annotated[MemberType, Parameter(help="The new member type.")],
    controller_url: ControllerUrl = None,
) -> int:
    """Change the named member's type (making or unmaking an admin moves the Administrator
    role with it; the last admin cannot be demoted)."""
    member = run(controller_url, lambda c: _orgs(c).update_member(org, user, type))
    say(f"{member.email} is now {member.type.value} in {org}")
    show(member)
    return 0


@org_remove.command(name="member")
def remove_org_member(
    user: User, /, *, org: OrgOption, controller_url: ControllerUrl = None
) -> int:
    """Remove the named member from an organisation (the last admin cannot be removed)."""
    run(controller_url, lambda c: _orgs(c).remove_member(org, user))
    say(f"removed {user} from {org}")
    return 0


# ---------------------------------------------------------------- roles


def parse_grants(allow: list[str] | None, deny: list[str] | None) -> dict[str, GrantSpec]:
    """``--allow templates=view,execute --deny org=delete`` as grants per resource."""
    from adapters.http.schemas.orgs import GrantSpec

    found: dict[str, tuple[list[str], list[str]]] = {}
    for flag, values, index in (("allow", allow, 0), ("deny", deny, 1)):
        for value in values or []:
            resource, eq, actions = value.partition("=")
            if not eq or not resource.strip():
                raise Invalid(
                    f"--{flag} {value!r} is not RESOURCE=ACTION,ACTION",
                    errors=(FieldError(flag, "expected RESOURCE=ACTION,ACTION"),),
                )
            names = [a.strip() for a in actions.split(",") if a.strip()]
            found.setdefault(resource.strip(), ([], []))[index].extend(names)
    return {r: GrantSpec(a, d) for r, (a, d) in found.items()}


@org_list.command(name="roles")
def list_org_roles(*, org: OrgOption, controller_url: ControllerUrl = None) -> int:
    """List an organisation's roles and what they allow and deny."""
    _table(run(controller_url, lambda c: _orgs(c).roles(org)), ROLE_COLUMNS)
    return 0


@org_create.command(name="role")
def create_org_role(
    name: Annotated[str, Parameter(help="The role's name (unique in the org).")],
    /,
    *,
    org: OrgOption,
    allow: Grants = None,
    deny: Grants = None,
    controller_url: ControllerUrl = None,
) -> int:
    """Create a role, e.g. --allow templates=view,execute --deny org=delete (deny wins)."""
    grants = parse_grants(allow, deny)
    role = run(controller_url, lambda c: _orgs(c).create_role(org, name, grants))
    say(f"created role {role.name} ({role.id})")
    show(role)
    return 0


@org_update.command(name="role")
def update_org_role(
    role: Annotated[str, Parameter(help="The role, by name or id.")],
    /,
    *,
    org: OrgOption,
    name: Annotated[str | None, Parameter(help="A new name.")] = None,
    allow: Grants = None,
    deny: Grants = None,
    replace: Annotated[
        bool,
        Parameter(
            help="Replace every grant (resources not given lose "
            "theirs) instead of only those given."
        ),
    ] = False,
    controller_url: ControllerUrl = None,
) -> int:
    """Rename a role or change its grants: each resource given gets exactly the allow and
    deny actions given for it; others keep theirs unless --replace."""
    grants = parse_grants(allow, deny)

    async def change(c: ControllerClient) -> Any:
        sdk = _orgs(c)
        if replace:
            updated = await sdk.set_permissions(org, role, grants)
            return await sdk.update_role(org, updated.id, name=name) if name else updated
        return await sdk.update_role(org, role, name=name, grants=grants or None)

    updated = run(controller_url, change)
    say(f"updated role {updated.name}")
    show(updated)
    return 0


@org_remove.command(name="role")
def remove_org_role(
    role: Annotated[str, Parameter(help="The role, by name or id.")],
    /,
    *,
    org: OrgOption,
    controller_url: ControllerUrl = None,
) -> int:
    """Delete a role (built-in roles cannot be deleted); its holders lose it."""
    removed = run(controller_url, lambda c: _orgs(c).delete_role(org, role))
    say(f"deleted role {removed.name}")
    return 0


RoleArg = Annotated[str, Parameter(help="The role, by name or id.")]
UserOption = Annotated[str | None, Parameter(help="The member, by email or user id.")]
TokenOption = Annotated[str | None, Parameter(help="The worker token, by name or id.")]


def _holder(user: str | None, token: str | None) -> str:
    if (user is None) == (token is None):
        raise Invalid(
            "name who gets the role",
            errors=(FieldError("user", "give exactly one of --user and --token"),),
        )
    return f"member {user}" if user else f"token {token}"


@org_assign.command(name="role")
def assign_org_role(
    role: RoleArg,
    /,
    *,
    org: OrgOption,
    user: UserOption = None,
    token: TokenOption = None,
    controller_url: ControllerUrl = None,
) -> int:
    """Give a role to a member (--user) or a worker token (--token)."""
    who = _holder(user, token)
    assigned = run(
        controller_url, lambda c: _orgs(c).assign_role(org, role, user=user, token=token)
    )
    say(f"gave role {assigned.name} to {who}")
    return 0


@org_unassign.command(name="role")
def unassign_org_role(
    role: RoleArg,
    /,
    *,
    org: OrgOption,
    user: UserOption = None,
    token: TokenOption = None,
    controller_url: ControllerUrl = None,
) -> int:
    """Take a role from a member (--user) or a worker token (--token)."""
    who = _holder(user, token)
    taken = run(controller_url, lambda c: _orgs(c).unassign_role(org, role, user=user, token=token))
    say(f"took role {taken.name} from {who}")
    return 0


def can(
    action: Annotated[
        str,
        Parameter(
            help="create, view, update, delete, execute or manage "
            "(aliases: read, get, run, edit, remove, admin …)."
        ),
    ],
    resource: Annotated[
        str,
        Parameter(
            help="org, org_user, org_config, org_billing, "
            "templates, automations or automation_logs."
        ),
    ],
    /,
    *,
    org: OrgOption,
    user: Annotated[str | None, Parameter(help="Ask about this member (default: you).")] = None,
    controller_url: ControllerUrl = None,
) -> int:
    """May a member do ACTION on RESOURCE? Prints the answer with its reason; exits 0 when
    allowed and 7 when not."""
    answer = run(controller_url, lambda c: _orgs(c).can(org, action, resource, user))
    say(f"{'allowed' if answer.allowed else 'denied'}: {answer.reason}")
    if current()["output"] != "text":
        show(answer)
    return 0 if answer.allowed else int(ExitCode.FORBIDDEN)


# ---------------------------------------------------------------- tokens


def write_token_files(directory: Path, issued: IssuedSecret) -> list[Path]:
    """``<id>.token`` (the secret) and ``<id>.env`` (id and secret), readable by you only."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    files = {
        directory / f"{issued.id}.token": issued.token + "\n",
        directory / f"{issued.id}.env": (
            f"OPSICLE_TOKEN_ID={issued.id}\nOPSICLE_TOKEN={issued.token}\n"
        ),
    }
    for path, text in files.items():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT
    return list(files)


def _issued(issued: IssuedSecret, output_dir: Path | None) -> None:
    if output_dir is None:
        say("the secret is shown this once; keep it now:")
        show(issued)
        return
    paths = write_token_files(output_dir, issued)
    say(f"wrote {', '.join(str(p) for p in paths)} (mode 0600)")
    if current()["output"] != "text":
        show({"id": issued.id, "name": issued.name, "files": [str(p) for p in paths]})


@org_create.command(name="token")
def create_org_token(
    name: Annotated[str, Parameter(help="A name for the token, unique among active ones.")],
    /,
    *,
    org: OrgOption,
    role: Annotated[
        list[str] | None,
        Parameter(
            help="Role(s) the token holds, by name or id (repeatable). Default: Worker (Default)."
        ),
    ] = None,
    output_dir: OutputDir = None,
    controller_url: ControllerUrl = None,
) -> int:
    """Create a worker token; its secret is shown (or written with --output-dir) once."""
    issued = run(controller_url, lambda c: _orgs(c).create_token(org, name, role or []))
    _issued(issued, output_dir)
    return 0


@org_list.command(name="tokens")
def list_org_tokens(*, org: OrgOption, controller_url: ControllerUrl = None) -> int:
    """List an organisation's worker tokens (never their secrets)."""
    _table(run(controller_url, lambda c: _orgs(c).tokens(org)), TOKEN_COLUMNS)
    return 0


TokenArg = Annotated[str, Parameter(help="The token, by name or id.")]


@org_get.command(name="token")
def get_org_token(
    token: TokenArg, /, *, org: OrgOption, controller_url: ControllerUrl = None
) -> int:
    """Show a worker token and its roles."""
    found = run(controller_url, lambda c: _orgs(c).token(org, token))
    if current()["output"] == "text":
        show(_rows([found])[0])
    else:
        show(found)
    return 0


@org_revoke.command(name="token")
def revoke_org_token(
    token: TokenArg, /, *, org: OrgOption, controller_url: ControllerUrl = None
) -> int:
    """Revoke a worker token: it stops working at once."""
    revoked = run(controller_url, lambda c: _orgs(c).revoke_token(org, token))
    say(f"revoked token {revoked.name} ({revoked.id})")
    return 0


@org_rotate.command(name="token")
def rotate_org_token(
    token: TokenArg,
    /,
    *,
    org: OrgOption,
    output_dir: OutputDir = None,
    controller_url: ControllerUrl = None,
) -> int:
    """Give a worker token a new secret (shown once); the old one stops working at once."""
    issued = run(controller_url, lambda c: _orgs(c).rotate_token(org, token))
    _issued(issued, output_dir)
    return 0


# ---------------------------------------------------------------- audit


@verbs.list_.command(name="audit-logs")
def list_audit_logs(
    *,
    org: Annotated[
        str | None, Parameter(help="An org's trail (needs org:view) instead of your own.")
    ] = None,
    actor: Annotated[
        str | None, Parameter(help="Only events by this user (email or id), with --org.")
    ] = None,
    verb: Annotated[str | None, Parameter(help="Only this verb, e.g. token.create.")] = None,
    resource: Annotated[str | None, Parameter(help="Only this resource type, e.g. token.")] = None,
    since: Annotated[datetime | None, Parameter(help="From this time (ISO 8601).")] = None,
    until: Annotated[datetime | None, Parameter(help="Before this time (ISO 8601).")] = None,
    limit: Annotated[int, Parameter(help="At most this many events.")] = 50,
    cursor: Annotated[str | None, Parameter(help="Continue from a previous page.")] = None,
    controller_url: ControllerUrl = None,
) -> int:
    """Show your own audit trail, or an organisation's with --org, oldest first."""
    page = run(
        controller_url,
        lambda c: _orgs(c).audit_logs(
            org,
            actor=actor,
            verb=verb,
            resource=resource,
            since=_aware(since),
            until=_aware(until),
            limit=limit,
            cursor=cursor,
        ),
    )
    if current()["output"] == "text":
        rows = _rows(list(page.items))
        for row in rows:
            row["actor"] = row.pop("actorEmail", "") or row["actor"]
        show(rows, columns=AUDIT_COLUMNS)
        if page.next_cursor:
            say(f"more: --cursor {page.next_cursor}")
    else:
        show(page)
    return 0


def _aware(moment: datetime | None) -> datetime | None:
    """Times typed without a zone are taken as local time."""
    return moment.astimezone() if moment is not None and moment.tzinfo is None else moment


@verbs.audit.command(name="verify")
def audit_verify(*, controller_url: ControllerUrl = None) -> int:
    """Check the audit log's hash chain; exits 1 and names the first broken event if any."""
    check = run(controller_url, lambda c: _orgs(c).verify_audit_logs())
    if check.ok:
        say(f"ok: {check.checked} events, the chain holds")
    else:
        say(
            f"broken: event {check.broken_event_id} at position {check.position} "
            f"({check.broken_at}) does not match its hash or its predecessor"
        )
    if current()["output"] != "text":
        show(check)
    return 0 if check.ok else int(ExitCode.ERROR)
