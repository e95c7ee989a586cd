"""Reads and writes runbook YAML, adding file, line and column to every validation error."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import yaml

from domain.errors import FieldError, Invalid
from domain.resources import Kind, Resource, parse_resource, to_data

Position = tuple[int, int]


@attrs.frozen
class Document:
    """One parsed resource and where it came from."""

    resource: Resource
    source: str
    index: int
    text: str


class _Builder:
    """Turns a composed YAML node tree into plain data, remembering each field's position."""

    def __init__(self, loader: yaml.SafeLoader) -> None:
        self.loader = loader
        self.positions: dict[str, Position] = {}
        self.errors: list[FieldError] = []

    def build(self, node: yaml.Node, path: str) -> Any:
        if isinstance(node, yaml.MappingNode):
            self.loader.flatten_mapping(node)
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.loader.construct_object(key_node, deep=True)
                child = f"{path}.{key}" if path else str(key)
                if isinstance(key, list | dict):
                    key = str(key)
                self.positions[child] = _position(key_node)
                if key in out:
                    self.errors.append(FieldError(child, "appears twice in the same mapping"))
                out[key] = self.build(value_node, child)
            return out
        if isinstance(node, yaml.SequenceNode):
            items = []
            for i, item in enumerate(node.value):
                child = f"{path}[{i}]"
                self.positions[child] = _position(item)
                items.append(self.build(item, child))
            return items
        return self.loader.construct_object(node, deep=True)

    def locate(self, field: str) -> Position | None:
        """The position of ``field``, or of its nearest ancestor that exists in the file."""
        path = field
        while path:
            if path in self.positions:
                return self.positions[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return None


def _position(node: yaml.Node) -> Position:
    return node.start_mark.line + 1, node.start_mark.column + 1


def parse_text(
    text: str, source: str = "<input>", *, expected: Sequence[Kind] = ()
) -> list[Document]:
    """Every resource in a (multi-document) YAML text; ``Invalid`` lists each located problem."""
    documents: list[Document] = []
    errors: list[FieldError] = []
    index = 0
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise Invalid(
            f"{source} is not valid",
            errors=(
                FieldError(
                    "", f"not valid YAML: character {exc.character!r} is not allowed", source, line
                ),
            ),
        ) from exc
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            builder = _Builder(loader)
            data = builder.build(node, "")
            start = node.start_mark.line + 1
            prefix = f"document {index + 1}: " if index else ""
            try:
                if builder.errors:
                    raise Invalid("duplicate keys", errors=tuple(builder.errors))
                resource = parse_resource(data, expected=expected)
            except Invalid as exc:
                for err in exc.errors:
                    line, column = builder.locate(err.field) or (start, 1)
                    errors.append(
                        attrs.evolve(
                            err,
                            source=source,
                            line=line,
                            column=column,
                            message=prefix + err.message if prefix else err.message,
                        )
                    )
            else:
                segment = "\n".join(
                    text.splitlines()[node.start_mark.line : node.end_mark.line + 1]
                )
                documents.append(Document(resource, source, index, segment))
            index += 1
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or "is not valid YAML"
        errors.append(FieldError("", f"not valid YAML: {problem}", source, line, column))
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        errors.append(
            FieldError(
                "", f"not valid YAML: character {exc.character!r} is not allowed", source, line
            )
        )
    finally:
        loader.dispose()
    if errors:
        errors.sort(key=lambda e: (e.line or 0, e.column or 0))
        raise Invalid(f"{source} is not valid", errors=tuple(errors))
    if not documents:
        raise Invalid(
            f"{source} is not valid",
            errors=(
                FieldError(
                    "",
                    "has no resource (expected a document with apiVersion, type, "
                    "metadata and spec)",
                    source,
                    1,
                    1,
                ),
            ),
        )
    return documents


def load_file(path: Path, *, expected: Sequence[Kind] = ()) -> list[Document]:
    """Parse a YAML file; unreadable files raise ``Invalid`` naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise Invalid(
            f"{path}: no such file", errors=(FieldError("", "no such file", str(path)),)
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise Invalid(
            f"{path} cannot be read", errors=(FieldError("", f"cannot be read: {exc}", str(path)),)
        ) from exc
    return parse_text(text, str(path), expected=expected)


def dump(resource: Resource) -> str:
    """The resource as YAML in the original camelCase format."""
    return yaml.safe_dump(to_data(resource), sort_keys=False, allow_unicode=True)
