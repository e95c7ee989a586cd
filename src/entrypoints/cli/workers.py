"""Worker registry command: ``opsicle list workers`` shows who pulls an org's runs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from cyclopts import Parameter

from entrypoints.cli import verbs
from entrypoints.cli.client import current, run, show

if TYPE_CHECKING:
    from adapters.http.schemas.workers import WorkerInfo

ControllerUrl = Annotated[
    str | None,
    Parameter(
        help="Controller to talk to. Default: OPSICLE_CONTROLLER_URL, the config file, "
        "or http://127.0.0.1:13371"
    ),
]
WORKER_COLUMNS = ("name", "org", "labels", "version", "lastSeen", "runs", "online", "id")


def _ago(at: datetime, now: datetime) -> str:
    seconds = max(0, int((now - at).total_seconds()))
    if seconds < 60:
        return f"{seconds}s ago"
    if seconds < 3600:
        return f"{seconds // 60}m ago"
    if seconds < 86400:
        return f"{seconds // 3600}h ago"
    return at.astimezone().strftime("%Y-%m-%d %H:%M")


def worker_row(info: WorkerInfo, now: datetime) -> dict[str, Any]:
    return {
        "name": info.name,
        "org": info.org_code,
        "labels": ",".join(f"{k}={v}" for k, v in sorted(info.labels.items())),
        "version": info.version,
        "lastSeen": _ago(info.last_seen_at, now),
        "runs": info.runs_in_progress,
        "online": "yes" if info.online else "no",
        "id": info.id,
    }


@verbs.list_.command(name="workers")
def list_workers(
    *,
    org: Annotated[
        str | None, Parameter(help="Only this org's workers (code or id). Default: all my orgs.")
    ] = None,
    controller_url: ControllerUrl = None,
) -> int:
    """List workers: name, labels, version, last seen, runs in progress, and whether they are
    online (heard from in the last 90 seconds). Needs automations:view in the org."""
    from adapters.http.workers_client import WorkersClient

    found = run(controller_url, lambda c: WorkersClient(c).list_workers(org))
    if current()["output"] == "text":
        now = datetime.now(UTC)
        show([worker_row(w, now) for w in found], columns=WORKER_COLUMNS)
    else:
        show(found)
    return 0
