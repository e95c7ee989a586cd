"""Rendering command results as text tables, JSON or YAML."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from domain.errors import Invalid, OpsicleError

if TYPE_CHECKING:
    from rich.console import Console

# rich and yaml are imported where they are used: plain output (JSON, `opsicle version`)
# must not pay for them at start-up.


def console(stream: TextIO | None = None) -> Console:
    from rich.console import Console

    return Console(file=stream or sys.stdout, soft_wrap=True, highlight=False)


def error_console() -> Console:
    from rich.console import Console

    return Console(file=sys.stderr, soft_wrap=True, highlight=False)


def emit(data: Any, fmt: str, *, columns: Sequence[str] = (), title: str = "") -> None:
    """Print ``data`` (a mapping or a list of mappings) in the chosen output format."""
    out = sys.stdout
    if fmt == "json":
        out.write(json.dumps(data, indent=2, default=str) + "\n")
        return
    if fmt == "yaml":
        import yaml

        out.write(yaml.safe_dump(_plain(data), sort_keys=False, allow_unicode=True))
        return
    from rich.table import Table

    if isinstance(data, Mapping):
        table = Table(show_header=False, box=None, title=title or None)
        for key, value in data.items():
            table.add_row(f"[bold]{key}[/bold]", str(value))
        console().print(table)
    else:
        rows = [{c: str(v) for c, v in row.items()} for row in data]
        cols = list(columns) or (list(rows[0]) if rows else [])
        out_console = console()
        table = Table(title=title or None)
        for col in cols:
            if col == "id":
                # What the next command needs: on one line when it fits in half the width,
                # folded onto more otherwise, never cut short.
                longest = max((len(row.get(col, "")) for row in rows), default=0)
                table.add_column(col, overflow="fold", no_wrap=longest <= out_console.width // 2)
            else:
                table.add_column(col)
        for row in rows:
            table.add_row(*(row.get(c, "") for c in cols))
        out_console.print(table)


def _plain(data: Any) -> Any:
    return json.loads(json.dumps(data, default=str))


def report_error(error: OpsicleError) -> None:
    """One readable message on stderr; for invalid input, one line per located problem."""
    err = error_console()
    if isinstance(error, Invalid) and error.errors:
        err.print(f"[red]error:[/red] {error.message}", markup=True)
        for problem in error.errors:
            err.print(f"  {problem}", markup=False)
    else:
        err.print(f"[red]error:[/red] {error.message}", markup=True)
