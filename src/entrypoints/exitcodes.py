"""The exit codes of every ``opsicle`` command, and what each means."""

from __future__ import annotations

from enum import IntEnum

from domain.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    OpsicleError,
    SchemaMismatch,
    Unauthenticated,
    Unavailable,
)


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    INVALID = 2
    PHASE_FAILED = 3
    TIMED_OUT = 4
    UNAVAILABLE = 5
    NOT_FOUND = 6
    FORBIDDEN = 7
    UNAUTHENTICATED = 8
    CONFLICT = 9
    NOT_APPROVED = 10
    SCHEMA = 11
    CANCELLED = 130


MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "success: the command did what it was asked, and a run succeeded",
    ExitCode.ERROR: "an unexpected error; the message says what happened",
    ExitCode.INVALID: "invalid input: a command-line option, a YAML file or a variable is wrong "
    "(the message names the file, line and field)",
    ExitCode.PHASE_FAILED: "the run failed: a phase exited with a non-zero code",
    ExitCode.TIMED_OUT: "the run timed out: a phase ran longer than its timeout",
    ExitCode.UNAVAILABLE: "a service or store did not answer (controller, database, Docker "
    "engine); try again when it is back",
    ExitCode.NOT_FOUND: "the thing named does not exist, or you cannot see it",
    ExitCode.FORBIDDEN: "permission denied: your roles do not allow this",
    ExitCode.UNAUTHENTICATED: "not logged in, or the session expired: run 'opsicle login'",
    ExitCode.CONFLICT: "conflict: the thing exists already or changed meanwhile",
    ExitCode.NOT_APPROVED: "the run was not approved: an approver rejected it, or its approval "
    "request expired (a followed run)",
    ExitCode.SCHEMA: "the database schema does not match this version of Opsicle: run 'opsicle "
    "run migrations' (or start the role with --migrate) when it is behind, upgrade Opsicle when "
    "it is newer",
    ExitCode.CANCELLED: "cancelled: interrupted with Ctrl-C (or SIGTERM) and stopped cleanly",
}


def for_error(error: OpsicleError) -> ExitCode:
    for kind, code in (
        (SchemaMismatch, ExitCode.SCHEMA),
        (Invalid, ExitCode.INVALID),
        (Unavailable, ExitCode.UNAVAILABLE),
        (NotFound, ExitCode.NOT_FOUND),
        (Forbidden, ExitCode.FORBIDDEN),
        (Unauthenticated, ExitCode.UNAUTHENTICATED),
        (Conflict, ExitCode.CONFLICT),
    ):
        if isinstance(error, kind):
            return code
    return ExitCode.ERROR
