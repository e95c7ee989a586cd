"""The YAML resource kinds (Automation, AutomationTemplate, ApprovalPolicy, ApprovalRequest).

Parsing text is an adapter's job; this module validates the plain data a parser produces and
reports every problem with the dotted path of the field, so the adapter can add file and line.
"""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import math
import re
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from typing import Any, TypeVar
from urllib.parse import urlsplit

import attrs

from domain.errors import FieldError, Invalid

API_VERSION = "v1"
DEFAULT_PHASE_TIMEOUT = 60
MAX_PHASE_TIMEOUT = 7 * 24 * 3600
DESCRIPTION_LABEL = "opsicle.io/description"
# A value becomes one environment string of a phase, which Linux caps at 128 KiB with its name.
MAX_VALUE_BYTES = 64 * 1024

_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,251}[a-z0-9])?$", re.IGNORECASE)
_VARIABLE_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
# Names a variable may not take, because the phase's shell or Opsicle depend on them.
RESERVED_ENV = frozenset(
    {
        "PATH",
        "HOME",
        "SHELL",
        "PWD",
        "OLDPWD",
        "USER",
        "LOGNAME",
        "HOSTNAME",
        "IFS",
        "TERM",
        "LANG",
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "TMPDIR",
        "PS1",
        "PS2",
        "PS4",
        "ENV",
        "BASH_ENV",
    }
)


class Kind(StrEnum):
    AUTOMATION = "Automation"
    AUTOMATION_TEMPLATE = "AutomationTemplate"
    APPROVAL_POLICY = "ApprovalPolicy"
    APPROVAL_REQUEST = "ApprovalRequest"


class VariableType(StrEnum):
    STRING = "string"
    BOOL = "bool"
    NUMBER = "number"
    FLOAT = "float"


@attrs.frozen
class Metadata:
    name: str
    labels: Mapping[str, str] = attrs.field(factory=dict)
    annotations: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen
class VolumeMount:
    host: str
    container: str


@attrs.frozen
class Phase:
    name: str
    image: str
    commands: tuple[str, ...]
    timeout: int = DEFAULT_PHASE_TIMEOUT


@attrs.frozen
class AutomationSpec:
    phases: tuple[Phase, ...]
    volume_mounts: tuple[VolumeMount, ...] = ()


VariableValue = str | bool | int | float


@attrs.frozen
class Variable:
    id: str
    type: VariableType = VariableType.STRING
    label: str = ""
    description: str = ""
    default: VariableValue | None = None
    is_required: bool = False
    secret: bool = False

    @property
    def env_name(self) -> str:
        return env_name(self.id)


def env_name(variable_id: str) -> str:
    """The environment variable a phase sees: upper case, every other character an underscore."""
    return re.sub(r"[^A-Z0-9]", "_", variable_id.upper())


@attrs.frozen
class Owner:
    name: str
    email: str = ""


@attrs.frozen
class Responder:
    user_id: str | None = None
    username: str | None = None
    mfa_seed: str | None = None


@attrs.frozen
class TelegramTarget:
    chat_ids: tuple[int, ...]
    authorized_responders: tuple[Responder, ...] = ()


@attrs.frozen
class SlackTarget:
    channel_names: tuple[str, ...] = ()
    channel_ids: tuple[str, ...] = ()
    authorized_responders: tuple[Responder, ...] = ()


class ApproverKind(StrEnum):
    USER = "user"
    ROLE = "role"


@attrs.frozen
class Approver:
    """Who may answer: an Opsicle user (by email or id) or every member holding a role."""

    kind: ApproverKind
    ref: str


@attrs.frozen
class WebhookAuth:
    """How a webhook receiver is authenticated: ``basic`` (username, password), ``bearer``
    (the token in ``value``) or ``header`` (header ``key`` set to ``value``)."""

    kind: str  # basic | bearer | header
    username: str = ""
    password: str = ""
    key: str = ""
    value: str = ""


DEFAULT_WEBHOOK_ATTEMPTS = 8
MAX_WEBHOOK_ATTEMPTS = 20
# What a secret is shown as: stored webhook credentials are never shown back.
MASK = "***"


@attrs.frozen
class PolicyWebhook:
    """Where every decision on a request under the policy is POSTed (``domain.webhooks``).

    Secrets (``auth`` password, token or header value, and ``signing_secret``) are plain text
    when read from a document and sealed once stored; ``with_webhook_secrets`` converts them.
    """

    url: str
    auth: WebhookAuth | None = None
    signing_secret: str = ""
    max_attempts: int = DEFAULT_WEBHOOK_ATTEMPTS

    @property
    def has_secrets(self) -> bool:
        return bool(self.signing_secret) or self.auth is not None


DEFAULT_APPROVAL_SECONDS = 3600
MAX_APPROVAL_SECONDS = 30 * 24 * 3600
MAX_QUORUM = 20


@attrs.frozen
class PolicySpec:
    id: str = ""
    telegram: tuple[TelegramTarget, ...] = ()
    slack: tuple[SlackTarget, ...] = ()
    # Opsicle's own fields; all optional, so the original's documents still read.
    approvers: tuple[Approver, ...] = ()
    quorum: int = 1
    require_code: bool = False
    expires_in: int = DEFAULT_APPROVAL_SECONDS
    in_app: bool = True
    webhooks: tuple[PolicyWebhook, ...] = ()


@attrs.frozen
class ApprovalPolicyChoice:
    """A template's approval policy: a reference to a stored policy, or one written inline."""

    policy_ref: str | None = None
    spec: PolicySpec | None = None


@attrs.frozen
class Webhook:
    url: str
    method: str = "POST"
    retry_count: int = 5
    retry_interval_seconds: int | None = None
    auth: WebhookAuth | None = None


@attrs.frozen
class Link:
    url: str
    description: str = ""


@attrs.frozen
class RequestSpec:
    id: str
    message: str
    uuid: str = ""
    title: str = ""
    requester_id: str = ""
    requester_name: str = ""
    links: tuple[Link, ...] = ()
    ttl_seconds: int = 3600
    telegram: tuple[TelegramTarget, ...] = ()
    slack: tuple[SlackTarget, ...] = ()
    webhook: Webhook | None = None


@attrs.frozen
class Automation:
    metadata: Metadata
    spec: AutomationSpec
    variables: tuple[Variable, ...] = ()
    kind: Kind = Kind.AUTOMATION


@attrs.frozen
class AutomationTemplate:
    metadata: Metadata
    template: AutomationSpec
    variables: tuple[Variable, ...] = ()
    display_name: str = ""
    description: str = ""
    owners: tuple[Owner, ...] = ()
    approval_policy: ApprovalPolicyChoice | None = None
    kind: Kind = Kind.AUTOMATION_TEMPLATE

    @property
    def spec(self) -> AutomationSpec:
        return self.template


@attrs.frozen
class ApprovalPolicy:
    metadata: Metadata
    spec: PolicySpec
    kind: Kind = Kind.APPROVAL_POLICY


@attrs.frozen
class ApprovalRequest:
    metadata: Metadata
    spec: RequestSpec
    kind: Kind = Kind.APPROVAL_REQUEST


Resource = Automation | AutomationTemplate | ApprovalPolicy | ApprovalRequest
Runnable = Automation | AutomationTemplate

T = TypeVar("T")


class _Reader:
    """Walks plain data, collecting every problem with the path of the field it concerns."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def fail(self, path: str, message: str) -> None:
        self.errors.append(FieldError(field=path, message=message))

    def mapping(
        self, value: object, path: str, allowed: Sequence[str], ignored: Sequence[str] = ()
    ) -> Mapping[str, Any] | None:
        if not isinstance(value, Mapping):
            self.fail(path, f"expected a mapping, got {_describe(value)}")
            return None
        for key in value:
            if not isinstance(key, str):
                self.fail(path, f"keys must be strings, got {_describe(key)}")
            elif key not in allowed and key not in ignored:
                hint = difflib.get_close_matches(key, allowed, n=1)
                did_you_mean = f" (did you mean '{hint[0]}'?)" if hint else ""
                self.fail(
                    _join(path, key),
                    f"unknown field{did_you_mean}; expected one of: {', '.join(allowed)}",
                )
        return value

    def string(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        *,
        required: bool = False,
        default: str = "",
        pattern: re.Pattern[str] | None = None,
        rule: str = "",
    ) -> str:
        value = data.get(key)
        where = _join(path, key)
        if value is None:
            if required:
                self.fail(where, "is required (a string)")
            return default
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.fail(where, f"expected a string, got {_describe(value)}")
            return default
        text = str(value)
        if required and not text.strip():
            self.fail(where, "must not be empty")
        elif pattern is not None and not pattern.match(text):
            self.fail(where, f"'{text}' is not valid: {rule}")
        return text

    def integer(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        *,
        default: int,
        minimum: int,
        maximum: int,
    ) -> int:
        value = data.get(key)
        where = _join(path, key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(where, f"expected a whole number, got {_describe(value)}")
            return default
        if not minimum <= value <= maximum:
            self.fail(where, f"expected a number from {minimum} to {maximum}, got {value}")
            return default
        return value

    def boolean(self, data: Mapping[str, Any], key: str, path: str) -> bool:
        value = data.get(key)
        if value is None:
            return False
        if not isinstance(value, bool):
            self.fail(_join(path, key), f"expected true or false, got {_describe(value)}")
            return False
        return value

    def items(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        read: Callable[[object, str], T | None],
        *,
        required: bool = False,
        single_allowed: bool = False,
    ) -> tuple[T, ...]:
        value = data.get(key)
        where = _join(path, key)
        if value is None:
            if required:
                self.fail(where, "is required (a list with at least one entry)")
            return ()
        if single_allowed and isinstance(value, Mapping):
            single = read(value, where)
            return () if single is None else (single,)
        if not isinstance(value, list):
            self.fail(where, f"expected a list, got {_describe(value)}")
            return ()
        if required and not value:
            self.fail(where, "must have at least one entry")
        out = []
        for i, item in enumerate(value):
            parsed = read(item, f"{where}[{i}]")
            if parsed is not None:
                out.append(parsed)
        return tuple(out)

    def strings(self, data: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
        def read(item: object, where: str) -> str | None:
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                self.fail(where, f"expected a string, got {_describe(item)}")
                return None
            return str(item)

        return self.items(data, key, path, read)

    def string_map(self, data: Mapping[str, Any], key: str, path: str) -> dict[str, str]:
        value = data.get(key)
        if value is None:
            return {}
        where = _join(path, key)
        if not isinstance(value, Mapping):
            self.fail(where, f"expected a mapping of names to strings, got {_describe(value)}")
            return {}
        out: dict[str, str] = {}
        for k, v in value.items():
            if (
                isinstance(v, bool)
                or not isinstance(v, str | int | float)
                or not isinstance(k, str)
            ):
                self.fail(_join(where, str(k)), f"expected a string, got {_describe(v)}")
            else:
                out[k] = str(v)
        return out


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({shorten(str(value))})"
    if isinstance(value, str):
        return f"a string ('{shorten(value)}')"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def shorten(text: str) -> str:
    """``text`` as an error message quotes it: at most 40 characters."""
    return text if len(text) <= 40 else text[:37] + "..."


def parse_resource(data: object, *, expected: Sequence[Kind] = ()) -> Resource:
    """Validate one document's data; raise ``Invalid`` naming every offending field."""
    r = _Reader()
    top = r.mapping(data, "", ("apiVersion", "type", "kind", "metadata", "spec"))
    if top is None:
        raise Invalid("the document is not a resource", errors=tuple(r.errors))
    api = top.get("apiVersion")
    if api is None:
        r.fail("apiVersion", f"is required; expected '{API_VERSION}'")
    elif str(api) != API_VERSION:
        r.fail("apiVersion", f"expected '{API_VERSION}', got {_describe(api)}")
    kind_key = "type" if "type" in top or "kind" not in top else "kind"
    raw_kind = top.get(kind_key)
    kinds = ", ".join(k.value for k in Kind)
    kind: Kind | None = None
    if raw_kind is None:
        r.fail("type", f"is required; expected one of: {kinds}")
    elif not isinstance(raw_kind, str) or raw_kind not in {k.value for k in Kind}:
        r.fail(kind_key, f"expected one of: {kinds}; got {_describe(raw_kind)}")
    else:
        kind = Kind(raw_kind)
        if expected and kind not in expected:
            wanted = " or ".join(k.value for k in expected)
            r.fail(kind_key, f"expected {wanted} here, got {kind.value}")
    metadata = _metadata(r, top.get("metadata"))
    spec = top.get("spec")
    if spec is None:
        r.fail("spec", "is required (a mapping)")
    resource: Resource | None = None
    if kind is not None and spec is not None and metadata is not None:
        resource = _KIND_READERS[kind](r, metadata, spec)
    if r.errors or resource is None:
        raise Invalid("the resource is not valid", errors=tuple(r.errors))
    return resource


def _metadata(r: _Reader, value: object) -> Metadata | None:
    if value is None:
        r.fail("metadata", "is required (a mapping with at least 'name')")
        return None
    m = r.mapping(value, "metadata", ("name", "labels", "annotations", "namespace"))
    if m is None:
        return None
    name = r.string(
        m,
        "name",
        "metadata",
        required=True,
        pattern=_NAME,
        rule="use letters, digits, '.', '_' and '-', starting and ending with a letter or digit",
    )
    return Metadata(
        name=name,
        labels=r.string_map(m, "labels", "metadata"),
        annotations=r.string_map(m, "annotations", "metadata"),
    )


def _automation_spec(r: _Reader, data: Mapping[str, Any], path: str) -> AutomationSpec:
    phases = r.items(data, "phases", path, lambda v, p: _phase(r, v, p), required=True)
    seen: dict[str, int] = {}
    for i, phase in enumerate(phases):
        if phase.name in seen:
            r.fail(
                f"{path}.phases[{i}].name",
                f"'{phase.name}' is already used by phases[{seen[phase.name]}]",
            )
        seen.setdefault(phase.name, i)
    mounts = r.items(data, "volumeMounts", path, lambda v, p: _mount(r, v, p))
    return AutomationSpec(phases=phases, volume_mounts=mounts)


def _phase(r: _Reader, value: object, path: str) -> Phase | None:
    m = r.mapping(value, path, ("name", "image", "commands", "timeout"), ignored=("logs",))
    if m is None:
        return None
    name = r.string(m, "name", path, required=True)
    image = r.string(m, "image", path, required=True)
    commands = r.strings(m, "commands", path)
    if not commands:
        r.fail(f"{path}.commands", "is required (a list of shell commands with at least one entry)")
    timeout = r.integer(
        m, "timeout", path, default=DEFAULT_PHASE_TIMEOUT, minimum=1, maximum=MAX_PHASE_TIMEOUT
    )
    return Phase(name=name, image=image, commands=commands, timeout=timeout)


def _mount(r: _Reader, value: object, path: str) -> VolumeMount | None:
    m = r.mapping(value, path, ("host", "container"))
    if m is None:
        return None
    host = r.string(m, "host", path, required=True)
    container = r.string(m, "container", path, required=True)
    if container and not container.startswith("/"):
        r.fail(f"{path}.container", f"expected an absolute path, got '{container}'")
    return VolumeMount(host=host, container=container)


def _variable(r: _Reader, value: object, path: str) -> Variable | None:
    m = r.mapping(
        value,
        path,
        ("id", "label", "description", "type", "default", "isRequired", "secret"),
        ignored=("value",),
    )
    if m is None:
        return None
    vid = r.string(
        m,
        "id",
        path,
        required=True,
        pattern=_VARIABLE_ID,
        rule="start with a letter; then letters, digits, '_' or '-' (64 at most)",
    )
    raw_type = m.get("type", VariableType.STRING.value)
    try:
        vtype = VariableType(raw_type)
    except ValueError:
        choices = ", ".join(t.value for t in VariableType)
        r.fail(f"{path}.type", f"expected one of: {choices}; got {_describe(raw_type)}")
        vtype = VariableType.STRING
    default: VariableValue | None = None
    if m.get("default") is not None:
        try:
            default = coerce_value(vtype, m["default"])
        except ValueError as exc:
            r.fail(f"{path}.default", str(exc))
    if vid and env_name(vid) in RESERVED_ENV:
        r.fail(
            f"{path}.id",
            f"'{vid}' would set ${env_name(vid)}, which phases rely on; pick another id",
        )
    return Variable(
        id=vid,
        type=vtype,
        label=r.string(m, "label", path),
        description=r.string(m, "description", path),
        default=default,
        is_required=r.boolean(m, "isRequired", path),
        secret=r.boolean(m, "secret", path),
    )


def _variables(r: _Reader, data: Mapping[str, Any], path: str) -> tuple[Variable, ...]:
    variables = r.items(data, "variables", path, lambda v, p: _variable(r, v, p))
    seen: dict[str, str] = {}
    for i, var in enumerate(variables):
        name = var.env_name
        if name in seen:
            r.fail(
                f"{path}.variables[{i}].id",
                f"'{var.id}' gives the same environment name ${name} as '{seen[name]}'",
            )
        seen.setdefault(name, var.id)
    return variables


class ValueTooLong(ValueError):
    """A value bigger than a phase's environment takes; the message never shows the value."""


def coerce_value(vtype: VariableType, value: object) -> VariableValue:
    """Turn a YAML value or command-line text into the variable's type, or raise ValueError."""
    if isinstance(value, str) and len(value.encode()) > MAX_VALUE_BYTES:
        raise ValueTooLong(
            f"is too long ({len(value.encode())} bytes as UTF-8); "
            f"at most {MAX_VALUE_BYTES} bytes (64 KiB) fit in a phase's environment"
        )
    if vtype is VariableType.STRING:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, bool):
            return str(value).lower()
        raise ValueError(f"expected a string, got {_describe(value)}")
    if vtype is VariableType.BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUTHY | _FALSY:
            return value.strip().lower() in _TRUTHY
        raise ValueError(f"expected true or false, got {_describe(value)}")
    if vtype is VariableType.NUMBER:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            with contextlib.suppress(ValueError):  # more digits than Python converts
                return int(value)
        raise ValueError(f"expected a whole number, got {_describe(value)}")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a number, got {_describe(value)}")
    try:
        number = float(value)
    except OverflowError:  # a whole number beyond any float
        number = math.inf
    except ValueError:
        raise ValueError(f"expected a number, got {_describe(value)}") from None
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {_describe(value)}")
    return number


_TRUTHY = frozenset({"true", "yes", "on", "1"})
_FALSY = frozenset({"false", "no", "off", "0"})


def _owner(r: _Reader, value: object, path: str) -> Owner | None:
    m = r.mapping(value, path, ("name", "email"))
    if m is None:
        return None
    return Owner(name=r.string(m, "name", path, required=True), email=r.string(m, "email", path))


def _responder(r: _Reader, value: object, path: str) -> Responder | None:
    m = r.mapping(value, path, ("userId", "username", "mfaSeed"))
    if m is None:
        return None
    user_id = r.string(m, "userId", path) or None
    username = r.string(m, "username", path) or None
    seed = r.string(m, "mfaSeed", path) or None
    if user_id is None and username is None:
        r.fail(path, "needs 'userId' or 'username'")
    if seed is not None and not re.fullmatch(r"[A-Z2-7]{16,}=*", seed.upper()):
        r.fail(f"{path}.mfaSeed", "expected a base32 TOTP secret of at least 16 characters")
    return Responder(user_id=user_id, username=username, mfa_seed=seed)


def _telegram(r: _Reader, value: object, path: str) -> TelegramTarget | None:
    m = r.mapping(value, path, ("chatIds", "authorizedResponders"), ignored=("notifications",))
    if m is None:
        return None

    def chat(item: object, where: str) -> int | None:
        if isinstance(item, bool) or not isinstance(item, int | str):
            r.fail(where, f"expected a numeric chat id, got {_describe(item)}")
            return None
        try:
            return int(item)
        except ValueError:
            r.fail(where, f"expected a numeric chat id, got {_describe(item)}")
            return None

    chat_ids = r.items(m, "chatIds", path, chat, required=True)
    responders = r.items(m, "authorizedResponders", path, lambda v, p: _responder(r, v, p))
    for i, resp in enumerate(responders):
        if resp.user_id is not None and not re.fullmatch(r"-?\d+", resp.user_id):
            r.fail(
                f"{path}.authorizedResponders[{i}].userId",
                f"Telegram user ids are numbers, got '{resp.user_id}'",
            )
    return TelegramTarget(chat_ids=chat_ids, authorized_responders=responders)


def _slack(r: _Reader, value: object, path: str) -> SlackTarget | None:
    m = r.mapping(
        value,
        path,
        ("channelNames", "channelIds", "authorizedResponders"),
        ignored=("notifications",),
    )
    if m is None:
        return None
    names = tuple(n.lstrip("#") for n in r.strings(m, "channelNames", path))
    ids = r.strings(m, "channelIds", path)
    if not names and not ids:
        r.fail(path, "needs 'channelNames' or 'channelIds'")
    responders = r.items(m, "authorizedResponders", path, lambda v, p: _responder(r, v, p))
    return SlackTarget(channel_names=names, channel_ids=ids, authorized_responders=responders)


_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> int | None:
    """Seconds from a whole number or text like "90s", "15m", "1h", "2d"; None if neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        match = _DURATION.match(value.lower())
        if match:
            return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return None


def _approver(r: _Reader, value: object, path: str) -> Approver | None:
    if isinstance(value, str):
        text = value.strip()
        if text.lower().startswith("role:"):
            kind, ref = ApproverKind.ROLE, text[5:].strip()
        else:
            kind, ref = ApproverKind.USER, text.removeprefix("user:").strip()
        if not ref:
            r.fail(path, "must name a user (email or id) or a role ('role:NAME')")
            return None
        return Approver(kind, ref)
    m = r.mapping(value, path, ("user", "role"))
    if m is None:
        return None
    user = r.string(m, "user", path).strip()
    role = r.string(m, "role", path).strip()
    if bool(user) == bool(role):
        r.fail(path, "expected exactly one of 'user' or 'role'")
        return None
    return Approver(ApproverKind.USER, user) if user else Approver(ApproverKind.ROLE, role)


def _policy_spec(r: _Reader, value: object, path: str) -> PolicySpec | None:
    m = r.mapping(
        value,
        path,
        (
            "id",
            "uuid",
            "namespace",
            "telegram",
            "slack",
            "approvers",
            "quorum",
            "requireCode",
            "expiresIn",
            "inApp",
            "webhooks",
        ),
    )
    if m is None:
        return None
    webhooks = r.items(m, "webhooks", path, lambda v, p: _policy_webhook(r, v, p),
                       single_allowed=True)
    telegram = r.items(m, "telegram", path, lambda v, p: _telegram(r, v, p), single_allowed=True)
    slack = r.items(m, "slack", path, lambda v, p: _slack(r, v, p), single_allowed=True)
    approvers = r.items(m, "approvers", path, lambda v, p: _approver(r, v, p))
    quorum = r.integer(m, "quorum", path, default=1, minimum=1, maximum=MAX_QUORUM)
    in_app = True if m.get("inApp") is None else r.boolean(m, "inApp", path)
    if not telegram and not slack and not in_app:
        r.fail(path, "needs at least one channel: 'telegram', 'slack' or 'inApp: true'")
    expires_in = DEFAULT_APPROVAL_SECONDS
    if m.get("expiresIn") is not None:
        seconds = parse_duration(m["expiresIn"])
        if seconds is None or not 60 <= seconds <= MAX_APPROVAL_SECONDS:
            r.fail(
                _join(path, "expiresIn"),
                f"expected seconds or a duration like 15m, 1h, 2d (1 minute to "
                f"{MAX_APPROVAL_SECONDS // 86400} days), got {_describe(m['expiresIn'])}",
            )
        else:
            expires_in = seconds
    return PolicySpec(
        id=r.string(m, "id", path),
        telegram=telegram,
        slack=slack,
        approvers=approvers,
        quorum=quorum,
        require_code=r.boolean(m, "requireCode", path),
        expires_in=expires_in,
        in_app=in_app,
        webhooks=webhooks,
    )


def _approval_choice(r: _Reader, value: object, path: str) -> ApprovalPolicyChoice | None:
    m = r.mapping(value, path, ("policyRef", "spec"))
    if m is None:
        return None
    ref = r.string(m, "policyRef", path) or None
    spec = _policy_spec(r, m["spec"], f"{path}.spec") if m.get("spec") is not None else None
    if (ref is None) == (spec is None):
        r.fail(path, "expected exactly one of 'policyRef' or 'spec'")
    return ApprovalPolicyChoice(policy_ref=ref, spec=spec)


def _webhook(r: _Reader, value: object, path: str) -> Webhook | None:
    cb = r.mapping(value, path, ("type", "webhook"))
    if cb is None or cb.get("webhook") is None:
        if cb is not None:
            r.fail(f"{path}.webhook", "is required (a mapping with at least 'url')")
        return None
    wpath = f"{path}.webhook"
    w = r.mapping(
        cb["webhook"], wpath, ("url", "method", "retryCount", "retryIntervalSeconds", "auth")
    )
    if w is None:
        return None
    url = r.string(
        w,
        "url",
        wpath,
        required=True,
        pattern=re.compile(r"^https?://\S+$"),
        rule="expected an http:// or https:// URL",
    )
    method = r.string(w, "method", wpath, default="POST").upper()
    if method not in {"POST", "PUT", "PATCH", "GET"}:
        r.fail(f"{wpath}.method", f"expected POST, PUT, PATCH or GET, got '{method}'")
    auth = (
        _webhook_auth(r, w["auth"], f"{wpath}.auth") if w.get("auth") is not None else None
    )
    interval = w.get("retryIntervalSeconds")
    return Webhook(
        url=url,
        method=method,
        auth=auth,
        retry_count=r.integer(w, "retryCount", wpath, default=5, minimum=0, maximum=100),
        retry_interval_seconds=None
        if interval is None
        else r.integer(w, "retryIntervalSeconds", wpath, default=5, minimum=1, maximum=86400),
    )


def _webhook_auth(r: _Reader, value: object, path: str) -> WebhookAuth | None:
    """``basic: {username, password}``, ``bearer: {token}`` or ``header: {name, value}``;
    the original's spellings ``bearer: {value}`` and ``header: {key, value}`` read too."""
    a = r.mapping(value, path, ("basic", "bearer", "header"))
    if a is None:
        return None
    kinds = [k for k in ("basic", "bearer", "header") if k in a]
    if len(kinds) != 1:
        if kinds or not a:  # an unknown kind alone is reported as an unknown field
            r.fail(path, "expected exactly one of 'basic', 'bearer' or 'header'")
        return None
    kind = kinds[0]
    where = f"{path}.{kind}"
    if kind == "basic":
        b = r.mapping(a[kind], where, ("username", "password"))
        if b is None:
            return None
        return WebhookAuth(
            "basic",
            username=r.string(b, "username", where, required=True),
            password=r.string(b, "password", where, required=True),
        )
    if kind == "bearer":
        b = r.mapping(a[kind], where, ("token", "value"))
        if b is None:
            return None
        token_key = "value" if "value" in b and "token" not in b else "token"
        return WebhookAuth("bearer", value=_header_value(r, b, token_key, where))
    b = r.mapping(a[kind], where, ("name", "key", "value"))
    if b is None:
        return None
    name_key = "key" if "key" in b and "name" not in b else "name"
    name = r.string(b, name_key, where, required=True)
    if name and not _HEADER_NAME.match(name):
        r.fail(f"{where}.{name_key}", f"'{name}' is not a valid HTTP header name")
    return WebhookAuth("header", key=name, value=_header_value(r, b, "value", where))


def _header_value(r: _Reader, m: Mapping[str, Any], key: str, path: str) -> str:
    """A secret sent as an HTTP header value. One that cannot be sent would fail every
    attempt, and the HTTP client's error quotes the header: refused here, without echoing it."""
    value = r.string(m, key, path, required=True)
    if value and not _HEADER_VALUE.match(value):
        r.fail(f"{path}.{key}", "must be printable ASCII without line breaks or surrounding "
                                "spaces: it is sent in an HTTP header")
    return value


_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_HEADER_VALUE = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def webhook_url_problem(url: str) -> str | None:
    """Why ``url`` cannot receive webhooks, or None: https, or http to a loopback address
    (a receiver on the same machine, as in tests); no user:password@ part (use ``auth``)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return "is not a valid URL"
    host = parts.hostname or ""
    if not host or parts.scheme not in {"http", "https"} or any(c.isspace() for c in url):
        return "expected an https:// URL"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials (user:password@); use 'auth'"
    if parts.scheme == "http" and not _is_loopback(host):
        return "expected an https:// URL (http:// is accepted only to a loopback address)"
    return None


def _policy_webhook(r: _Reader, value: object, path: str) -> PolicyWebhook | None:
    m = r.mapping(value, path, ("url", "auth", "signingSecret", "maxAttempts"))
    if m is None:
        return None
    url = r.string(m, "url", path, required=True)
    problem = webhook_url_problem(url) if url.strip() else None
    if problem is not None:
        r.fail(_join(path, "url"), problem)
    return PolicyWebhook(
        url=url,
        auth=_webhook_auth(r, m["auth"], _join(path, "auth")) if m.get("auth") is not None
        else None,
        signing_secret=r.string(m, "signingSecret", path),
        max_attempts=r.integer(m, "maxAttempts", path, default=DEFAULT_WEBHOOK_ATTEMPTS,
                               minimum=1, maximum=MAX_WEBHOOK_ATTEMPTS),
    )


def with_webhook_secrets(spec: PolicySpec, change: Callable[[str], str]) -> PolicySpec:
    """``spec`` with each non-empty webhook secret (password, token, header value, signing
    secret) passed through ``change``: to seal, open or mask them."""
    if not spec.webhooks:
        return spec

    def secret(value: str) -> str:
        return change(value) if value else value

    hooks = []
    for hook in spec.webhooks:
        auth = hook.auth
        if auth is not None:
            auth = attrs.evolve(auth, password=secret(auth.password), value=secret(auth.value))
        hooks.append(attrs.evolve(hook, auth=auth, signing_secret=secret(hook.signing_secret)))
    return attrs.evolve(spec, webhooks=tuple(hooks))


def masked(spec: PolicySpec) -> PolicySpec:
    """``spec`` as it may be shown: every webhook secret is ``***``."""
    return with_webhook_secrets(spec, lambda _: MASK)


def _link(r: _Reader, value: object, path: str) -> Link | None:
    m = r.mapping(value, path, ("url", "description"))
    if m is None:
        return None
    return Link(
        url=r.string(m, "url", path, required=True), description=r.string(m, "description", path)
    )


def _read_automation(r: _Reader, metadata: Metadata, spec: object) -> Resource | None:
    m = r.mapping(spec, "spec", ("phases", "volumeMounts", "variables"), ignored=("status",))
    if m is None:
        return None
    return Automation(
        metadata=metadata, spec=_automation_spec(r, m, "spec"), variables=_variables(r, m, "spec")
    )


def _read_template(r: _Reader, metadata: Metadata, spec: object) -> Resource | None:
    m = r.mapping(spec, "spec", ("metadata", "template", "variables", "approvalPolicy"))
    if m is None:
        return None
    display, description = "", metadata.labels.get(DESCRIPTION_LABEL, "")
    owners: tuple[Owner, ...] = ()
    if m.get("metadata") is not None:
        meta = r.mapping(m["metadata"], "spec.metadata", ("displayName", "description", "owners"))
        if meta is not None:
            display = r.string(meta, "displayName", "spec.metadata")
            description = r.string(meta, "description", "spec.metadata", default=description)
            owners = r.items(meta, "owners", "spec.metadata", lambda v, p: _owner(r, v, p))
    template_data = m.get("template")
    template = AutomationSpec(phases=())
    if template_data is None:
        r.fail("spec.template", "is required (a mapping with 'phases')")
    else:
        t = r.mapping(template_data, "spec.template", ("phases", "volumeMounts"))
        if t is not None:
            template = _automation_spec(r, t, "spec.template")
    policy = None
    if m.get("approvalPolicy") is not None:
        policy = _approval_choice(r, m["approvalPolicy"], "spec.approvalPolicy")
        for i, hook in enumerate(policy.spec.webhooks if policy and policy.spec else ()):
            if hook.has_secrets:
                # A template's text is stored as written and shown to whoever may view it.
                r.fail(f"spec.approvalPolicy.spec.webhooks[{i}]",
                       "a template cannot hold webhook secrets ('auth', 'signingSecret'): put "
                       "the webhook in an org ApprovalPolicy and name it with 'policyRef'")
    return AutomationTemplate(
        metadata=metadata,
        template=template,
        variables=_variables(r, m, "spec"),
        display_name=display,
        description=description,
        owners=owners,
        approval_policy=policy,
    )


def _read_policy(r: _Reader, metadata: Metadata, spec: object) -> Resource | None:
    policy = _policy_spec(r, spec, "spec")
    return None if policy is None else ApprovalPolicy(metadata=metadata, spec=policy)


def _read_request(r: _Reader, metadata: Metadata, spec: object) -> Resource | None:
    m = r.mapping(
        spec,
        "spec",
        (
            "id",
            "uuid",
            "title",
            "message",
            "requesterId",
            "requesterName",
            "links",
            "ttlSeconds",
            "telegram",
            "slack",
            "callback",
        ),
        ignored=("type", "actions", "approval"),
    )
    if m is None:
        return None
    telegram = r.items(m, "telegram", "spec", lambda v, p: _telegram(r, v, p), single_allowed=True)
    slack = r.items(m, "slack", "spec", lambda v, p: _slack(r, v, p), single_allowed=True)
    if not telegram and not slack:
        r.fail("spec", "needs at least one channel: 'telegram' or 'slack'")
    webhook = _webhook(r, m["callback"], "spec.callback") if m.get("callback") is not None else None
    return ApprovalRequest(
        metadata=metadata,
        spec=RequestSpec(
            id=r.string(m, "id", "spec", required=True),
            message=r.string(m, "message", "spec", required=True),
            uuid=r.string(m, "uuid", "spec"),
            title=r.string(m, "title", "spec"),
            requester_id=r.string(m, "requesterId", "spec"),
            requester_name=r.string(m, "requesterName", "spec"),
            links=r.items(m, "links", "spec", lambda v, p: _link(r, v, p)),
            ttl_seconds=r.integer(
                m, "ttlSeconds", "spec", default=3600, minimum=1, maximum=30 * 86400
            ),
            telegram=telegram,
            slack=slack,
            webhook=webhook,
        ),
    )


_KIND_READERS: Mapping[Kind, Callable[[_Reader, Metadata, object], Resource | None]] = {
    Kind.AUTOMATION: _read_automation,
    Kind.AUTOMATION_TEMPLATE: _read_template,
    Kind.APPROVAL_POLICY: _read_policy,
    Kind.APPROVAL_REQUEST: _read_request,
}


def to_data(resource: Resource) -> dict[str, Any]:
    """The resource as plain data in the YAML format; ``parse_resource`` reads it back unchanged."""
    meta: dict[str, Any] = {"name": resource.metadata.name}
    if resource.metadata.labels:
        meta["labels"] = dict(resource.metadata.labels)
    if resource.metadata.annotations:
        meta["annotations"] = dict(resource.metadata.annotations)
    spec: dict[str, Any]
    if isinstance(resource, Automation):
        spec = _spec_data(resource.spec)
        if resource.variables:
            spec["variables"] = [_variable_data(v) for v in resource.variables]
    elif isinstance(resource, AutomationTemplate):
        spec = {"template": _spec_data(resource.template)}
        info: dict[str, Any] = {}
        if resource.display_name:
            info["displayName"] = resource.display_name
        if resource.description and resource.description != meta.get("labels", {}).get(
            DESCRIPTION_LABEL
        ):
            info["description"] = resource.description
        if resource.owners:
            info["owners"] = [
                _drop_empty({"name": o.name, "email": o.email}) for o in resource.owners
            ]
        if info:
            spec["metadata"] = info
        if resource.variables:
            spec["variables"] = [_variable_data(v) for v in resource.variables]
        if resource.approval_policy is not None:
            choice = resource.approval_policy
            spec["approvalPolicy"] = (
                {"policyRef": choice.policy_ref}
                if choice.policy_ref is not None
                else {"spec": _policy_data(choice.spec)}
                if choice.spec is not None
                else {}
            )
    elif isinstance(resource, ApprovalPolicy):
        spec = _policy_data(resource.spec)
    else:
        spec = _request_data(resource.spec)
    return {"apiVersion": API_VERSION, "type": resource.kind.value, "metadata": meta, "spec": spec}


def _drop_empty(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v not in ("", None, (), [], {})}


def _spec_data(spec: AutomationSpec) -> dict[str, Any]:
    out: dict[str, Any] = {
        "phases": [
            {"name": p.name, "image": p.image, "commands": list(p.commands), "timeout": p.timeout}
            for p in spec.phases
        ]
    }
    if spec.volume_mounts:
        out["volumeMounts"] = [
            {"host": m.host, "container": m.container} for m in spec.volume_mounts
        ]
    return out


def _variable_data(v: Variable) -> dict[str, Any]:
    data = _drop_empty(
        {"id": v.id, "type": v.type.value, "label": v.label, "description": v.description}
    )
    if v.default is not None:
        data["default"] = v.default
    if v.is_required:
        data["isRequired"] = True
    if v.secret:
        data["secret"] = True
    return data


def _responders_data(responders: tuple[Responder, ...]) -> list[dict[str, Any]]:
    return [
        _drop_empty({"userId": r.user_id, "username": r.username, "mfaSeed": r.mfa_seed})
        for r in responders
    ]


def _policy_data(spec: PolicySpec | None) -> dict[str, Any]:
    if spec is None:
        return {}
    data: dict[str, Any] = _drop_empty({"id": spec.id})
    if spec.telegram:
        data["telegram"] = [_telegram_data(t) for t in spec.telegram]
    if spec.slack:
        data["slack"] = [_slack_data(s) for s in spec.slack]
    if spec.approvers:
        data["approvers"] = [{a.kind.value: a.ref} for a in spec.approvers]
    if spec.quorum != 1:
        data["quorum"] = spec.quorum
    if spec.require_code:
        data["requireCode"] = True
    if spec.expires_in != DEFAULT_APPROVAL_SECONDS:
        data["expiresIn"] = spec.expires_in
    if not spec.in_app:
        data["inApp"] = False
    if spec.webhooks:
        data["webhooks"] = [_policy_webhook_data(w) for w in spec.webhooks]
    return data


def _auth_data(a: WebhookAuth, *, original: bool) -> dict[str, Any]:
    """``original``: the ApprovalRequest spellings (``bearer.value``, ``header.key``)."""
    if a.kind == "basic":
        return {"basic": {"username": a.username, "password": a.password}}
    if a.kind == "bearer":
        return {"bearer": {"value" if original else "token": a.value}}
    return {"header": {"key" if original else "name": a.key, "value": a.value}}


def _policy_webhook_data(w: PolicyWebhook) -> dict[str, Any]:
    data: dict[str, Any] = {"url": w.url}
    if w.auth is not None:
        data["auth"] = _auth_data(w.auth, original=False)
    if w.signing_secret:
        data["signingSecret"] = w.signing_secret
    if w.max_attempts != DEFAULT_WEBHOOK_ATTEMPTS:
        data["maxAttempts"] = w.max_attempts
    return data


def _telegram_data(t: TelegramTarget) -> dict[str, Any]:
    return _drop_empty(
        {
            "chatIds": list(t.chat_ids),
            "authorizedResponders": _responders_data(t.authorized_responders),
        }
    )


def _slack_data(s: SlackTarget) -> dict[str, Any]:
    return _drop_empty(
        {
            "channelNames": list(s.channel_names),
            "channelIds": list(s.channel_ids),
            "authorizedResponders": _responders_data(s.authorized_responders),
        }
    )


def _request_data(spec: RequestSpec) -> dict[str, Any]:
    data = _drop_empty(
        {
            "id": spec.id,
            "uuid": spec.uuid,
            "title": spec.title,
            "message": spec.message,
            "requesterId": spec.requester_id,
            "requesterName": spec.requester_name,
            "links": [
                _drop_empty({"url": ln.url, "description": ln.description}) for ln in spec.links
            ],
            "telegram": [_telegram_data(t) for t in spec.telegram],
            "slack": [_slack_data(s) for s in spec.slack],
        }
    )
    data["ttlSeconds"] = spec.ttl_seconds
    if spec.webhook is not None:
        w = spec.webhook
        hook: dict[str, Any] = {"url": w.url, "method": w.method, "retryCount": w.retry_count}
        if w.retry_interval_seconds is not None:
            hook["retryIntervalSeconds"] = w.retry_interval_seconds
        if w.auth is not None:
            hook["auth"] = _auth_data(w.auth, original=True)
        data["callback"] = {"type": "webhook", "webhook": hook}
    return data
