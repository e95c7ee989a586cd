"""Template commands: submit, list, get, versions, default version, remove, sharing."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from cyclopts import App, Parameter

from domain.errors import FieldError, Invalid
from entrypoints.cli import verbs
from entrypoints.cli.client import current, run, say, show
from entrypoints.output import console

if TYPE_CHECKING:
    from adapters.http.controller_client import ControllerClient
    from adapters.http.templates_client import TemplatesClient

ControllerUrl = Annotated[
    str | None,
    Parameter(
        help="Controller to talk to. Default: OPSICLE_CONTROLLER_URL, the config file, "
        "or http://127.0.0.1:13371"
    ),
]
TemplateRef = Annotated[str, Parameter(help="The template, by name or id.")]
OrgOption = Annotated[
    str | None,
    Parameter(
        name="--org",
        help="The organisation whose template it is (code or id). Default: your personal ones.",
    ),
]
Rights = Annotated[
    list[str],
    Parameter(
        help="Rights to share (repeat or comma-separate): view, execute, update, delete, invite."
    ),
]

TEMPLATE_COLUMNS = ("name", "id", "defaultVersion", "latestVersion", "org", "rights", "createdAt")
VERSION_COLUMNS = ("version", "isDefault", "size", "createdAt", "createdBy")
USER_COLUMNS = ("email", "userId", "rights", "grantedAt")

template_create = App(name="template", help="Submit a template (or, below it, share one).")
template_get = App(name="template", help="Show a template with its content.")
template_list = App(name="template", help="List a template's versions or users.")
template_update = App(name="template", help="Change a template's default version.")
template_remove = App(name="template", help="Delete a template (or, below it, a user's access).")
for verb, sub in (
    (verbs.create, template_create),
    (verbs.get, template_get),
    (verbs.list_, template_list),
    (verbs.update, template_update),
    (verbs.remove, template_remove),
):
    verb.command(sub)


def _templates(client: ControllerClient) -> TemplatesClient:
    from adapters.http.templates_client import TemplatesClient

    return TemplatesClient(client)


def _rows(items: list[Any]) -> list[dict[str, Any]]:
    from adapters.serialization import to_json

    rows = []
    for item in items:
        row = dict(to_json(item))
        if isinstance(row.get("rights"), list):
            row["rights"] = ",".join(row["rights"])
        if "orgId" in row:
            row["org"] = row.get("orgId") or "(personal)"
        rows.append(row)
    return rows


def _table(items: list[Any], columns: tuple[str, ...]) -> None:
    if current()["output"] == "text":
        show(_rows(items), columns=columns)
    else:
        show(items)


@template_create.default
def create_template(
    *,
    file: Annotated[
        Path, Parameter(name=["--file", "-f"], help="An AutomationTemplate YAML file.")
    ],
    org: OrgOption = None,
    controller_url: ControllerUrl = None,
) -> int:
    """Submit a template: a new one (version 1, the default), or a new version of the template
    of the same metadata.name. The file is checked here first; problems name FILE:LINE."""
    from adapters.template_reader import read_template
    from domain.services.templates import check_size

    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise Invalid(
            f"{file} cannot be read", errors=(FieldError("", f"cannot be read: {exc}", str(file)),)
        ) from exc
    check_size(text, str(file))
    read_template(text, str(file))
    made = run(controller_url, lambda c: _templates(c).submit(text, source=file.name, org=org))
    t = made.template
    if made.version == 1:
        say(f"created template {t.name} ({t.id}), version 1")
    else:
        say(
            f"added version {made.version} to template {t.name}; runs still use version "
            f"{t.default_version} (change it with 'opsicle update template version')"
        )
    _show_detail(made, content=False)
    return 0


@verbs.list_.command(name="templates")
def list_templates(*, org: OrgOption = None, controller_url: ControllerUrl = None) -> int:
    """List your templates and those shared with you, or an organisation's (--org)."""
    _table(run(controller_url, lambda c: _templates(c).list_templates(org)), TEMPLATE_COLUMNS)
    return 0


@template_get.default
def get_template(
    ref: TemplateRef,
    /,
    *,
    org: OrgOption = None,
    version: Annotated[
        int | None, Parameter(help="Show this version. Default: the default.")
    ] = None,
    controller_url: ControllerUrl = None,
) -> int:
    """Show a template and the content of its default version (or of --version)."""
    found = run(controller_url, lambda c: _templates(c).get(ref, org=org, version=version))
    _show_detail(found, content=True)
    return 0


def _show_detail(detail: Any, *, content: bool) -> None:
    if current()["output"] != "text":
        show(detail)
        return
    [row] = _rows([detail.template])
    row["version shown"] = detail.version
    show({k: row[k] for k in (*TEMPLATE_COLUMNS, "version shown") if k in row})
    if content:
        console().print(detail.content.rstrip("\n"), markup=False, highlight=False)


@template_list.command(name="versions")
def list_template_versions(
    ref: TemplateRef, /, *, org: OrgOption = None, controller_url: ControllerUrl = None
) -> int:
    """List a template's versions; the default one is the one runs use."""
    _table(run(controller_url, lambda c: _templates(c).versions(ref, org=org)), VERSION_COLUMNS)
    return 0


@template_update.command(name="version")
def update_template_version(
    ref: TemplateRef,
    /,
    *,
    version: Annotated[int, Parameter(help="The version runs use from now on.")],
    org: OrgOption = None,
    controller_url: ControllerUrl = None,
) -> int:
    """Choose a template's default version (needs the update right)."""
    changed = run(
        controller_url, lambda c: _templates(c).set_default_version(ref, version, org=org)
    )
    say(f"template {changed.template.name} now runs version {changed.version}")
    _show_detail(changed, content=False)
    return 0


@template_remove.default
def remove_template(
    ref: TemplateRef, /, *, org: OrgOption = None, controller_url: ControllerUrl = None
) -> int:
    """Delete a template with every version; past runs keep their snapshot."""
    gone = run(controller_url, lambda c: _templates(c).delete(ref, org=org))
    say(f"deleted template {gone.name} ({gone.id})")
    return 0


# ---------------------------------------------------------------- sharing


@template_create.command(name="user")
def create_template_user(
    ref: TemplateRef,
    /,
    *,
    email: Annotated[str, Parameter(help="Who to share with; the join code is emailed there.")],
    rights: Rights,
    controller_url: ControllerUrl = None,
) -> int:
    """Share a personal template: invite someone by email with some rights (needs invite)."""
    sent = run(controller_url, lambda c: _templates(c).invite(ref, email, rights))
    say(
        f"invited {sent.email} to template {ref} ({', '.join(sent.rights)}); "
        f"the join code was emailed to them"
    )
    show(sent)
    return 0


@verbs.join.command(name="template")
def join_template(
    *,
    code: Annotated[str | None, Parameter(help="The join code from the invitation email.")] = None,
    reject: Annotated[bool, Parameter(help="Turn the invitation down instead.")] = False,
    controller_url: ControllerUrl = None,
) -> int:
    """Accept a template invitation with its join code (asked for on a terminal), or reject it."""
    if not code:
        if not sys.stdin.isatty():
            raise Invalid(
                "joining needs the join code",
                errors=(FieldError("code", "pass --code (it was emailed to you)"),),
            )
        import getpass

        code = getpass.getpass("Join code: ").strip()
    answer = code
    if reject:
        refused = run(controller_url, lambda c: _templates(c).reject(answer))
        say(f"rejected the invitation to template {refused.template_id}")
        show(refused)
        return 0
    joined = run(controller_url, lambda c: _templates(c).accept(answer))
    say(f"template {joined.name} is shared with you ({', '.join(joined.rights)})")
    show(joined)
    return 0


@template_list.command(name="users")
def list_template_users(ref: TemplateRef, /, *, controller_url: ControllerUrl = None) -> int:
    """List who may use a personal template, with their rights."""
    _table(run(controller_url, lambda c: _templates(c).users(ref)), USER_COLUMNS)
    return 0


@template_remove.command(name="user")
def remove_template_user(
    ref: TemplateRef,
    /,
    *,
    user: Annotated[str, Parameter(help="The user, by email or id.")],
    controller_url: ControllerUrl = None,
) -> int:
    """Take a user's access to a personal template away (the last one who may invite stays)."""
    gone = run(controller_url, lambda c: _templates(c).remove_user(ref, user))
    say(f"{gone.email or gone.user_id} no longer has access to template {ref}")
    return 0
