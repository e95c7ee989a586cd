"""Commands that work on this machine alone: version, validate and run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from cyclopts import App, Parameter

from domain.errors import FieldError, Invalid
from entrypoints import settings
from entrypoints.output import console, emit
from entrypoints.version import build_info


def version() -> int:
    """Print Opsicle's version, the commit it was built from and the build date."""
    fmt = settings.current.get(settings.load())["output"]
    info = build_info()
    if fmt == "text":
        print(f"opsicle {info['version']} (commit {info['commit']}, built {info['buildDate']})")
    else:
        emit(info, fmt)
    return 0


def validate(files: Annotated[list[Path], Parameter(help="YAML files to check.")], /) -> int:
    """Check runbook YAML files (any resource kind); stop at the first invalid one.

    Each problem is reported as FILE:LINE:COLUMN: FIELD: what was expected.
    """
    from adapters.resources_yaml import load_file

    fmt = settings.current.get(settings.load())["output"]
    checked = []
    for path in files:
        for doc in load_file(path):
            row = {
                "file": str(path),
                "kind": doc.resource.kind.value,
                "name": doc.resource.metadata.name,
                "valid": True,
            }
            if fmt == "text":
                console().print(
                    f"{row['file']}: {row['kind']} '{row['name']}' is valid", markup=False
                )
            checked.append(row)
    if fmt != "text":
        emit(checked, fmt)
    return 0


def run(
    file: Annotated[Path, Parameter(help="An Automation or AutomationTemplate YAML file.")],
    /,
    *,
    var: Annotated[
        list[str] | None,
        Parameter(name=["--var", "-v"], help="A variable as key=value; repeat for more."),
    ] = None,
    runner: Annotated[
        Literal["auto", "process", "docker"] | None,
        Parameter(
            help="How phases run. auto: docker when an engine answers and every image is "
            "present locally, else process. Default: auto"
        ),
    ] = None,
    pull: Annotated[bool, Parameter(help="Let the docker runner pull missing images.")] = False,
    docker_host: Annotated[
        str | None, Parameter(help="Docker engine URL. Default: $DOCKER_HOST or the local socket")
    ] = None,
    grace_seconds: Annotated[
        float | None,
        Parameter(
            help="After a timeout or Ctrl-C, how long a phase has between SIGTERM and SIGKILL. "
            "Default: 5"
        ),
    ] = None,
    keep_workdir: Annotated[
        bool, Parameter(help="Keep the run's working directory afterwards and print its path.")
    ] = False,
) -> int:
    """Run a runbook on this machine: phases in order, output streamed line by line.

    Each variable reaches every phase as an environment variable: the id upper-cased with
    every other character turned into '_' (target-host -> TARGET_HOST). Secret values are
    shown as ***. Relative volumeMounts hosts are resolved against the YAML file's folder.
    Exit code 0 when every phase succeeds; see 'opsicle explain exitcode --all'.
    """
    import asyncio

    from adapters.resources_yaml import load_file
    from domain.resources import Kind
    from entrypoints.local_run import LocalRun, parse_vars

    resolved = settings.current.get(settings.load()).with_flags(
        runner=runner, docker_host=docker_host, grace_seconds=grace_seconds
    )
    docs = load_file(file, expected=(Kind.AUTOMATION, Kind.AUTOMATION_TEMPLATE))
    if len(docs) != 1:
        raise Invalid(
            f"{file} holds {len(docs)} runbooks; expected one",
            errors=(
                FieldError("", f"holds {len(docs)} runbooks; put each in its own file", str(file)),
            ),
        )
    local = LocalRun(
        resource=docs[0].resource,  # type: ignore[arg-type]
        base_dir=file.resolve().parent,
        given=parse_vars(var or []),
        runner_choice=resolved["runner"],
        docker_host=resolved["docker-host"],
        pull=pull,
        grace_seconds=resolved["grace-seconds"],
        output=resolved["output"],
        keep_workdir=keep_workdir,
    )
    return asyncio.run(local.main())


# ``opsicle run FILE`` runs here; ``opsicle run template NAME`` (added by the runs commands)
# runs on the platform.
run_app = App(
    name="run",
    help="Run a runbook: a YAML file on this machine (opsicle run FILE), or a template on the "
    "platform (opsicle run template NAME --org X).",
)
run_app.default(run)
