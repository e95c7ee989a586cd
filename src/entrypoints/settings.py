"""Effective settings: command-line flags > OPSICLE_* environment > config file > defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import attrs

from domain.errors import FieldError, Invalid

DEFAULTS: dict[str, Any] = {
    "log-level": "info",
    "output": "text",
    "listen": "127.0.0.1:13371",
    "data-dir": None,  # derived: $XDG_DATA_HOME/opsicle or ~/.local/share/opsicle
    "database-url": None,  # derived: SQLite in data-dir
    # MySQL/MariaDB only (SQLite ignores them): the connection pool, and TLS when a CA or a
    # client certificate is set (verify: the server's certificate and host name).
    "database-pool-size": 5,
    "database-max-overflow": 10,
    "database-tls-ca": None,
    "database-tls-cert": None,
    "database-tls-key": None,
    "database-tls-verify": True,
    # Roles bring a configured database's schema to the head on start (the derived SQLite
    # one always is); otherwise they refuse to start on a schema that is behind.
    "migrate": False,
    "runner": "auto",
    "docker-host": None,
    "grace-seconds": 5.0,
    "controller-url": "http://127.0.0.1:13371",
    "public-url": None,  # derived: http://<listen>
    "secret-key": None,  # derived: a key kept in data-dir/secret.key
    # Production stores; the embedded ones are used for any left unset.
    "redis-url": None,  # the cache: in-process unless set
    "redis-prefix": "opsicle:",
    "mongo-url": None,  # the audit log: the SQL store unless set
    "mongo-database": "opsicle",
    "tls-cert": None,  # servers speak HTTPS when both are set
    "tls-key": None,
    "smtp-host": None,  # email: the file outbox in data-dir unless set
    "smtp-port": 587,
    "smtp-starttls": "required",
    "smtp-username": None,
    "smtp-password": None,
    "smtp-from": "opsicle@localhost",
    # The queue: NATS JetStream when nats-url is set (servers comma-separated), else the
    # durable queue on the SQL store.
    "nats-url": None,
    "nats-user": None,
    "nats-password": None,
    "nats-nkey-seed-file": None,
    "nats-tls-ca": None,
    "nats-tls-cert": None,
    "nats-tls-key": None,
    "nats-stream": "opsicle-runs",
    "nats-ack-wait-seconds": 30.0,
    # Dispatch: the coordinator's leases, and the worker's link to coordinators.
    "lease-seconds": 30.0,
    "coordinator-url": "http://127.0.0.1:13372",  # several: comma-separated or a YAML list
    "token-id": None,
    "token": None,
    "concurrency": 1,
    "labels": "",
    "drain-seconds": 30.0,
    "metrics-listen": None,  # a worker serves /healthz and /metrics here when set
    # The approver: Telegram when a bot token is set, Slack when a bot token and the signing
    # secret are; the API URLs change only for tests against stand-ins.
    "telegram-bot-token": None,
    "telegram-api-url": "https://api.telegram.org",
    "slack-bot-token": None,
    "slack-signing-secret": None,
    "slack-app-token": None,  # an app-level token (xapp-…): interactions over Socket Mode
    "slack-api-url": "https://slack.com/api",
    # The approver's public keys a worker pins (PEM files; several: comma-separated or a YAML
    # list): runs carrying a grant execute only when it verifies under one of them.
    "approver-keys": None,
    # How long one webhook delivery attempt waits for the receiver's answer.
    "webhook-timeout": 10.0,
    # How many days delivered and given-up webhook deliveries are kept before they are purged.
    "webhook-retention-days": 30,
}
SECRET = frozenset({"secret-key", "token", "nats-password", "smtp-password",
                    "telegram-bot-token", "slack-bot-token", "slack-signing-secret",
                    "slack-app-token"})
NUMBERS = frozenset({"grace-seconds", "lease-seconds", "drain-seconds", "nats-ack-wait-seconds",
                     "webhook-timeout"})
BOOLEANS = frozenset({"migrate", "database-tls-verify"})
# Whole numbers: the lowest and highest allowed.
INTEGERS: dict[str, tuple[int, int]] = {
    "database-pool-size": (1, 1000),
    "database-max-overflow": (0, 1000),
    "webhook-retention-days": (1, 3650),
}
# Numbers of seconds where 0 makes no sense (a timeout of 0 fails every request).
POSITIVE = frozenset({"webhook-timeout"})
CHOICES: dict[str, tuple[str, ...]] = {
    "log-level": ("debug", "info", "warning", "error"),
    "output": ("text", "json", "yaml"),
    "runner": ("auto", "process", "docker"),
    "smtp-starttls": ("required", "optional", "off"),
}


def env_key(name: str) -> str:
    return "OPSICLE_" + name.upper().replace("-", "_")


def default_config_path(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "opsicle" / "config.yaml"


@attrs.frozen
class Value:
    value: Any
    origin: str


@attrs.frozen
class Settings:
    values: Mapping[str, Value]

    def __getitem__(self, name: str) -> Any:
        return self.values[name].value

    def origin(self, name: str) -> str:
        return self.values[name].origin

    def with_flags(self, **flags: Any) -> Settings:
        """These settings with the given command-line values (None = not given) on top."""
        merged = dict(self.values)
        for key, value in flags.items():
            name = key.replace("_", "-")
            if value is not None:
                merged[name] = _checked(name, value, f"flag --{name}")
        return Settings(merged)

    @property
    def data_dir(self) -> Path:
        configured = self["data-dir"]
        if configured:
            return Path(configured).expanduser()
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(base) / "opsicle"

    @property
    def public_url(self) -> str:
        scheme = "https" if self["tls-cert"] else "http"
        return str(self["public-url"] or f"{scheme}://{self['listen']}").rstrip("/")

    @property
    def database_url(self) -> str:
        return str(self["database-url"] or f"sqlite:///{self.data_dir / 'opsicle.db'}")


def _checked(name: str, value: Any, origin: str) -> Value:
    if name in BOOLEANS and not isinstance(value, bool):
        text = str(value).strip().lower()
        if text not in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            raise Invalid(
                f"{origin}: expected true or false",
                errors=(FieldError(name, f"expected true or false, got '{value}' ({origin})"),),
            )
        value = text in ("true", "yes", "on", "1")
    if name in NUMBERS:
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = None
        low = "above 0" if name in POSITIVE else "from 0"
        if value is None or not 0 <= value <= 3600 or (name in POSITIVE and value == 0):
            raise Invalid(
                f"{origin}: expected seconds {low} to 3600",
                errors=(
                    FieldError(name, f"expected a number of seconds {low} to 3600 ({origin})"),
                ),
            )
    if name == "concurrency":
        try:
            value = int(value)
        except (TypeError, ValueError):
            value = 0
        if not 1 <= value <= 256:
            raise Invalid(
                f"{origin}: expected a number of runs from 1 to 256",
                errors=(FieldError(name, f"expected a whole number from 1 to 256 ({origin})"),),
            )
    if name in INTEGERS:
        value = _integer(name, value, origin)
    choices = CHOICES.get(name)
    if choices and value not in choices:
        raise Invalid(
            f"{origin}: '{value}' is not valid",
            errors=(
                FieldError(
                    name, f"expected one of: {', '.join(choices)}; got '{value}' ({origin})"
                ),
            ),
        )
    return Value(value, origin)


def _integer(name: str, value: Any, origin: str) -> int:
    low, high = INTEGERS[name]
    try:
        number = int(str(value).strip())
    except ValueError:
        number = None
    if isinstance(value, bool) or number is None or not low <= number <= high:
        raise Invalid(
            f"{origin}: {name} '{value}' is not a whole number from {low} to {high}",
            errors=(FieldError(name, f"expected a whole number from {low} to {high}, "
                                     f"got '{value}' ({origin})"),),
        )
    return number


def load(
    config: Path | None = None, env: Mapping[str, str] | None = None, **flags: Any
) -> Settings:
    """Resolve every setting and remember where each value came from."""
    env = os.environ if env is None else env
    values = {name: Value(default, "default") for name, default in DEFAULTS.items()}
    explicit = config is not None or env_key("config") in env
    path = config or Path(env.get(env_key("config")) or default_config_path(env))
    if path.exists() or explicit:
        for name, value in _read_config(path).items():
            values[name] = _checked(name, value, f"config file {path}")
    for name in DEFAULTS:
        if env_key(name) in env:
            values[name] = _checked(name, env[env_key(name)], f"environment {env_key(name)}")
    return Settings(values).with_flags(**flags)


def _read_config(path: Path) -> dict[str, Any]:
    import yaml  # only when there is a config file: start-up without one stays cheap

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise Invalid(
            f"{path}: config file not found",
            errors=(FieldError("", "config file not found", str(path)),),
        ) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise Invalid(
            f"{path}: not valid YAML",
            errors=(
                FieldError(
                    "", f"not valid YAML: {exc.problem}", str(path), mark.line + 1 if mark else None
                ),
            ),
        ) from exc
    except (OSError, yaml.YAMLError) as exc:
        raise Invalid(
            f"{path}: cannot be read", errors=(FieldError("", f"cannot be read: {exc}", str(path)),)
        ) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise Invalid(
            f"{path}: expected a mapping",
            errors=(FieldError("", "expected a mapping of setting names to values", str(path), 1),),
        )
    out = {}
    for key, value in data.items():
        name = str(key).replace("_", "-")
        if name not in DEFAULTS:
            raise Invalid(
                f"{path}: unknown setting '{key}'",
                errors=(
                    FieldError(
                        str(key),
                        f"unknown setting; expected one of: {', '.join(DEFAULTS)}",
                        str(path),
                    ),
                ),
            )
        out[name] = value
    return out


current: ContextVar[Settings] = ContextVar("opsicle_settings")
