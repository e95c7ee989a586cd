"""The verb-first command tree (``opsicle create org``, ``opsicle list orgs`` …).

Area modules add their commands to these apps; ``main`` mounts them.
"""

from __future__ import annotations

from cyclopts import App

create = App(name="create", help="Create something: an org, a token, a role, MFA …")
list_ = App(name="list", help="List things: orgs, members, roles, tokens, audit logs …")
get = App(name="get", help="Show one thing in detail.")
update = App(name="update", help="Change something.")
remove = App(name="remove", help="Remove something.", alias=["delete", "rm"])
assign = App(name="assign", help="Give a role to an org member or a worker token.")
unassign = App(name="unassign", help="Take a role from an org member or a worker token.")
revoke = App(name="revoke", help="Revoke a worker token (it stops working at once).")
rotate = App(name="rotate", help="Replace a worker token's secret.")
verify = App(name="verify", help="Verify an email address.")
reset = App(name="reset", help="Reset a forgotten password.")
join = App(name="join", help="Accept an invitation.")
leave = App(name="leave", help="Leave an organisation.")
audit = App(name="audit", help="Check the audit log.")
retry = App(name="retry", help="Try something that failed again: a webhook delivery.")

ALL = (
    create,
    list_,
    get,
    update,
    remove,
    assign,
    unassign,
    revoke,
    rotate,
    verify,
    reset,
    join,
    leave,
    audit,
    retry,
)
