"""The ``opsicle`` command: the CLI and every server role in one executable."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Literal

from cyclopts import App, Parameter

from domain.errors import OpsicleError
from entrypoints import logs, settings
from entrypoints.cli import (
    accounts,
    completion,
    config,
    explain,
    links,
    local,
    probe,
    start,
    utils,
    verbs,
)
from entrypoints.cli import approvals as approval_commands
from entrypoints.cli import orgs as org_commands
from entrypoints.cli import runs as run_commands
from entrypoints.cli import templates as template_commands  # noqa: F401 (adds its verbs)
from entrypoints.cli import webhooks as webhook_commands  # noqa: F401 (adds its verbs)
from entrypoints.cli import workers as worker_commands  # noqa: F401 (adds its verbs)
from entrypoints.exitcodes import ExitCode, for_error
from entrypoints.output import report_error

app = App(
    name="opsicle",
    help="Runbook automation: run YAML runbooks here, or serve and execute them as a platform.\n\n"
    "Exit codes are listed by 'opsicle explain exitcode --all'.",
    version_flags=[],
)
app.command(local.version)
app.command(local.validate)
app.command(local.run_app)  # with 'run template' from run_commands
local.run_app.command(config.migrations)
app.command(config.app)
app.command(explain.app)
app.command(start.app)
app.command(probe.healthcheck)
app.command(utils.app)
app.command(completion.command(app), name="completion")
app.command(accounts.register)
app.command(accounts.login)
app.command(accounts.logout)
app.command(accounts.whoami)
app.command(org_commands.invite)
app.command(org_commands.can)
app.command(run_commands.logs)
app.command(run_commands.cancel)
app.command(links.link)
app.command(approval_commands.approve)
app.command(approval_commands.reject)
for _verb in verbs.ALL:
    app.command(_verb)


@app.meta.default
def launcher(
    *tokens: Annotated[str, Parameter(show=False, allow_leading_hyphen=True)],
    config: Annotated[
        Path | None,
        Parameter(
            help="Config file (YAML; keys are option names). Default: ~/.config/opsicle/config.yaml"
        ),
    ] = None,
    log_level: Annotated[
        Literal["debug", "info", "warning", "error"] | None,
        Parameter(help="Log level. Default: info"),
    ] = None,
    output: Annotated[
        Literal["text", "json", "yaml"] | None,
        Parameter(name=["--output", "-o"], help="Output format. Default: text"),
    ] = None,
) -> int:
    """Global options, valid before or after any command."""
    resolved = settings.load(config, log_level=log_level, output=output)
    logs.configure(resolved["log-level"])
    if resolved["log-level"] != "debug":
        # Migrations announce every plugin at INFO; only their problems are worth showing.
        logging.getLogger("alembic").setLevel(logging.WARNING)
        # Every request the CLI makes would otherwise be announced at INFO.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    token = settings.current.set(resolved)
    try:
        result = app(tokens)
    finally:
        settings.current.reset(token)
    return int(result or 0)


def run(argv: list[str] | None = None) -> int:
    """Console entry point: runs the command and turns domain errors into exit codes."""
    try:
        code = app.meta(sys.argv[1:] if argv is None else argv, result_action="return_value")
    except OpsicleError as exc:
        report_error(exc)
        code = for_error(exc)
    except KeyboardInterrupt:
        code = ExitCode.CANCELLED
    except Exception as exc:  # the last resort: one line, never a traceback
        logging.getLogger("opsicle").debug("unexpected error", exc_info=True)
        report_error(
            OpsicleError(
                f"unexpected {type(exc).__name__}: {exc} (--log-level debug shows the details)"
            )
        )
        code = ExitCode.ERROR
    if argv is None:
        sys.exit(int(code or 0))
    return int(code or 0)


if __name__ == "__main__":
    run()
