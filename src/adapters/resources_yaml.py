"""Reads and writes runbook YAML, adding file, line and column to every validation error."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import yaml

from domain.errors import FieldError, Invalid
from domain.resources import Kind, Resource, parse_resource, shorten, to_data

Position = tuple[int, int]
# Far beyond any real runbook; they bound the work an alias-laden or deeply nested text causes.
MAX_DEPTH = 100
MAX_VALUES = 100_000
MAX_PATH_CHARS = 10_000_000
_SCALAR_KINDS = {
    "timestamp": "date or time",
    "int": "whole number",
    "float": "number",
    "bool": "boolean",
}


@attrs.frozen
class Document:
    """One parsed resource and where it came from."""

    resource: Resource
    source: str
    index: int
    text: str


class _Loader(yaml.SafeLoader):
    """The safe loader, refusing nodes nested deeper than ``MAX_DEPTH``."""

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.depth >= MAX_DEPTH and parent is not None:
            raise yaml.composer.ComposerError(
                None, None, f"nests deeper than {MAX_DEPTH} levels", parent.start_mark
            )
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _Builder:
    """Turns a composed YAML node tree into plain data, remembering each field's position.

    ``build`` raises ``Invalid`` for a scalar its tag cannot make (``2024-13-45``), for a
    document of more than ``MAX_VALUES`` values once its aliases are expanded, and for one
    whose field paths (long keys, deep nesting) add up to more than ``MAX_PATH_CHARS``.
    """

    def __init__(self, loader: yaml.SafeLoader) -> None:
        self.loader = loader
        self.positions: dict[str, Position] = {}
        self.errors: list[FieldError] = []
        self.merged: dict[yaml.MappingNode, int] = {}
        self.values = 0
        self.path_chars = 0

    def build_document(self, node: yaml.Node) -> Any:
        try:
            return self.build(node, "")
        except RecursionError:
            # Nesting is bounded while composing, so only an alias inside itself gets here.
            raise Invalid(
                "the document refers to itself",
                errors=(FieldError("", "an alias refers to a mapping or list it is inside"),),
            ) from None

    def build(self, node: yaml.Node, path: str) -> Any:
        self.values += 1
        if self.values > MAX_VALUES:
            raise Invalid(
                "the document is too big",
                errors=(
                    FieldError(
                        "",
                        f"has more than {MAX_VALUES} values once its aliases are expanded",
                    ),
                ),
            )
        if isinstance(node, yaml.MappingNode):
            merged = self.flatten(node)
            out: dict[Any, Any] = {}
            own: set[Any] = set()
            for i, (key_node, value_node) in enumerate(node.value):
                key = self.build(key_node, path)
                child = f"{path}.{key}" if path else str(key)
                if isinstance(key, list | dict):
                    key = str(key)
                self.place(child, key_node)
                if key in own:
                    self.errors.append(FieldError(child, "appears twice in the same mapping"))
                if i >= merged:
                    own.add(key)
                out[key] = self.build(value_node, child)
            return out
        if isinstance(node, yaml.SequenceNode):
            items = []
            for i, item in enumerate(node.value):
                child = f"{path}[{i}]"
                self.place(child, item)
                items.append(self.build(item, child))
            return items
        try:
            return self.loader.construct_object(node, deep=True)
        except (ValueError, LookupError, AttributeError):  # e.g. !!bool 2, !!timestamp x
            kind = node.tag.rpartition(":")[2]
            raise Invalid(
                "a value is not valid",
                errors=(
                    FieldError(
                        path,
                        f"'{shorten(node.value)}' is not a valid {_SCALAR_KINDS.get(kind, kind)}; "
                        "quote it if it is text",
                    ),
                ),
            ) from None

    def place(self, path: str, node: yaml.Node) -> None:
        self.path_chars += len(path)
        if self.path_chars > MAX_PATH_CHARS:
            raise Invalid(
                "the document is too big",
                errors=(
                    FieldError(
                        "",
                        f"is too big to read: the paths of its fields add up to more than "
                        f"{MAX_PATH_CHARS} characters",
                    ),
                ),
            )
        self.positions[path] = _position(node)

    def flatten(self, node: yaml.MappingNode) -> int:
        """Put the pairs of ``<<`` merge keys first in ``node``; how many pairs they are.

        The mapping's own keys override merged ones. An alias brings the same node again,
        already flattened, so the count is kept.
        """
        if node not in self.merged:
            own = sum(1 for key, _ in node.value if key.tag != "tag:yaml.org,2002:merge")
            self.loader.flatten_mapping(node)
            self.merged[node] = len(node.value) - own
        return self.merged[node]

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
        loader = _Loader(text)
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
            start = node.start_mark.line + 1
            prefix = f"document {index + 1}: " if index else ""
            try:
                data = builder.build_document(node)
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
