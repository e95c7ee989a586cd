"""``opsicle start``: serve a role."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated, Any

from cyclopts import App, Parameter

from entrypoints import settings

app = App(name="start", help="Start a server role.")


Listen = Annotated[
    str | None,
    Parameter(help="Address to serve on, host:port. Default: 127.0.0.1:13371"),
]
DataDir = Annotated[
    str | None,
    Parameter(help="Where the embedded stores live. Default: ~/.local/share/opsicle"),
]
DatabaseUrl = Annotated[
    str | None,
    Parameter(help="SQLAlchemy URL of the platform database. Default: SQLite in --data-dir"),
]


@Parameter(name="*")
@dataclass
class DatabaseFlags:
    """The MySQL/MariaDB pool and TLS flags (SQLite ignores them)."""

    database_pool_size: Annotated[
        int | None,
        Parameter(help="MySQL/MariaDB connections kept open per process. Default: 5"),
    ] = None
    database_max_overflow: Annotated[
        int | None,
        Parameter(help="MySQL/MariaDB connections opened beyond the pool at busy times. "
                  "Default: 10"),
    ] = None
    database_tls_ca: Annotated[
        str | None,
        Parameter(help="Connect to MySQL/MariaDB over TLS, trusting this CA (PEM file)."),
    ] = None
    database_tls_cert: Annotated[
        str | None,
        Parameter(help="Connect to MySQL/MariaDB over TLS with this client certificate (PEM)."),
    ] = None
    database_tls_key: Annotated[
        str | None, Parameter(help="The private key (PEM) of --database-tls-cert.")
    ] = None
    database_tls_verify: Annotated[
        bool | None,
        Parameter(help="Verify the database server's certificate and host name. Default: true"),
    ] = None


def _database(flags: DatabaseFlags | None) -> dict[str, Any]:
    return asdict(flags) if flags else {}


PublicUrl = Annotated[
    str | None,
    Parameter(help="The URL people reach this server at, used in emails. Default: http://<listen>"),
]
TlsCert = Annotated[
    str | None,
    Parameter(help="Serve HTTPS with this certificate (PEM, the chain after the leaf)."),
]
TlsKey = Annotated[str | None, Parameter(help="The private key (PEM) of --tls-cert.")]
WebhookTimeout = Annotated[
    float | None,
    Parameter(help="Seconds one approval webhook delivery attempt waits for an answer. "
              "Default: 10"),
]
Migrate = Annotated[
    bool | None,
    Parameter(
        help="Bring the database schema to this version's head before serving (safe when "
        "several processes start at once). Without it a role refuses a configured database "
        "whose schema is behind; the default SQLite one is always brought forward."
    ),
]


@app.command
def controller(
    *,
    listen: Listen = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    database: DatabaseFlags | None = None,
    public_url: PublicUrl = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    webhook_timeout: WebhookTimeout = None,
    migrate: Migrate = None,
) -> int:
    """The REST API for people: accounts, MFA, organisations, roles, tokens, audit.

    Serves /api/v1 (OpenAPI at /api/v1/openapi.json, docs at /api/v1/docs), /healthz,
    /readyz and /metrics.
    """
    from entrypoints import eventloop
    from entrypoints.serve import serve_role

    resolved = current().with_flags(
        listen=listen,
        data_dir=data_dir,
        database_url=database_url,
        **_database(database),
        public_url=public_url,
        tls_cert=tls_cert,
        tls_key=tls_key,
        webhook_timeout=webhook_timeout,
        migrate=migrate,
    )
    return eventloop.run(serve_role("controller", resolved))


TelegramApiUrl = Annotated[
    str | None, Parameter(help="Telegram Bot API URL. Default: https://api.telegram.org")
]
SlackApiUrl = Annotated[
    str | None, Parameter(help="Slack Web API URL. Default: https://slack.com/api")
]


LeaseSeconds = Annotated[
    float | None,
    Parameter(help="How long a claimed run's lease lasts without a heartbeat. Default: 30"),
]
Concurrency = Annotated[int | None, Parameter(help="Runs executed at once. Default: 1")]
Runner = Annotated[
    str | None,
    Parameter(
        help="auto (Docker when every image is present, else a process), process, "
        "or docker. Default: auto"
    ),
]
DrainSeconds = Annotated[
    float | None,
    Parameter(
        help="On SIGTERM, how long running runs may finish before they are handed "
        "back. Default: 30"
    ),
]
DockerHost = Annotated[str | None, Parameter(help="Docker engine URL for --runner docker")]


@app.command
def standalone(
    *,
    listen: Listen = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    database: DatabaseFlags | None = None,
    public_url: PublicUrl = None,
    telegram_api_url: TelegramApiUrl = None,
    slack_api_url: SlackApiUrl = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    webhook_timeout: WebhookTimeout = None,
    migrate: Migrate = None,
    lease_seconds: LeaseSeconds = None,
    concurrency: Concurrency = None,
    runner: Runner = None,
    drain_seconds: DrainSeconds = None,
    docker_host: DockerHost = None,
) -> int:
    """Every role in one process on embedded stores (SQLite, in-process cache): no servers needed.

    Serves the controller's /api/v1, the workers' /api/v1/worker, /healthz, /readyz (checks
    the stores) and /metrics, and runs one embedded worker (--concurrency, --runner,
    --drain-seconds) for the runs of every org. Telegram and Slack approvals run here as in
    'opsicle start approver' when their tokens are set (OPSICLE_* variables or the config
    file).
    """
    from entrypoints import eventloop
    from entrypoints.serve import serve_role

    resolved = current().with_flags(
        listen=listen,
        data_dir=data_dir,
        database_url=database_url,
        **_database(database),
        public_url=public_url,
        telegram_api_url=telegram_api_url,
        slack_api_url=slack_api_url,
        tls_cert=tls_cert,
        tls_key=tls_key,
        webhook_timeout=webhook_timeout,
        migrate=migrate,
        lease_seconds=lease_seconds,
        concurrency=concurrency,
        runner=runner,
        drain_seconds=drain_seconds,
        docker_host=docker_host,
    )
    return eventloop.run(serve_role("standalone", resolved))


@app.command
def coordinator(
    *,
    listen: Annotated[
        str | None,
        Parameter(help="Address to serve on, host:port. Default: 127.0.0.1:13372"),
    ] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    database: DatabaseFlags | None = None,
    lease_seconds: LeaseSeconds = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    webhook_timeout: WebhookTimeout = None,
    migrate: Migrate = None,
) -> int:
    """The API for workers: org-token authentication, long-poll claims, leases, heartbeats,
    logs and results, with the outbox relay and the lease reaper running.

    Serves /api/v1/worker (OpenAPI at /api/v1/openapi.json), /healthz, /readyz and /metrics.
    """
    from entrypoints import eventloop
    from entrypoints.serve import serve_role

    resolved = current().with_flags(
        data_dir=data_dir,
        database_url=database_url,
        **_database(database),
        lease_seconds=lease_seconds,
        tls_cert=tls_cert,
        tls_key=tls_key,
        webhook_timeout=webhook_timeout,
        migrate=migrate,
    )
    return eventloop.run(serve_role("coordinator", _own_port(resolved, listen, 13372)))


@app.command
def approver(
    *,
    listen: Annotated[
        str | None,
        Parameter(help="Address to serve on, host:port. Default: 127.0.0.1:13370"),
    ] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    database: DatabaseFlags | None = None,
    telegram_api_url: TelegramApiUrl = None,
    slack_api_url: SlackApiUrl = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    migrate: Migrate = None,
) -> int:
    """Deliver approval requests to Telegram and Slack and collect linked users' answers.

    Telegram runs when telegram-bot-token is set (long-polls updates); Slack posts when
    slack-bot-token is set and takes button presses and commands over Socket Mode when
    slack-app-token is set, at the request URLs /slack/interactions and /slack/commands when
    slack-signing-secret is. Tokens come from OPSICLE_* variables or the config file, never
    flags.
    Serves /healthz, /readyz and /metrics.
    """
    from entrypoints import eventloop
    from entrypoints.serve import serve_role

    resolved = current().with_flags(
        data_dir=data_dir,
        database_url=database_url,
        **_database(database),
        telegram_api_url=telegram_api_url,
        slack_api_url=slack_api_url,
        tls_cert=tls_cert,
        tls_key=tls_key,
        migrate=migrate,
    )
    return eventloop.run(serve_role("approver", _own_port(resolved, listen, 13370)))


@app.command
def worker(
    *,
    coordinator_url: Annotated[
        list[str] | None,
        Parameter(
            help="A coordinator to pull from; repeat for several (failover). "
            "Default: http://127.0.0.1:13372",
            negative="",
        ),
    ] = None,
    token_id: Annotated[str | None, Parameter(help="The org token's id (OPSICLE_TOKEN_ID)")] = None,
    token: Annotated[str | None, Parameter(help="The org token's secret (OPSICLE_TOKEN)")] = None,
    token_file: Annotated[
        str | None,
        Parameter(help="A file 'opsicle create org token --output-dir' wrote: ID.env or ID.token"),
    ] = None,
    concurrency: Concurrency = None,
    labels: Annotated[
        str | None, Parameter(help="Labels shown in the worker registry: k=v,k2=v2")
    ] = None,
    runner: Runner = None,
    name: Annotated[str | None, Parameter(help="The worker's name. Default: the host name")] = None,
    drain_seconds: DrainSeconds = None,
    docker_host: DockerHost = None,
    metrics_listen: Annotated[
        str | None,
        Parameter(help="Serve /healthz and /metrics (runs by outcome) on host:port, e.g. "
                  "127.0.0.1:13373. Default: not served"),
    ] = None,
    approver_key: Annotated[
        list[str] | None,
        Parameter(
            help="The approver's public key to pin (a PEM file 'opsicle get approver-key' "
            "printed); repeat for several. Runs carrying an approval grant execute only when "
            "it verifies under one of them.",
            negative="",
        ),
    ] = None,
) -> int:
    """Pull runs of the token's org from coordinators and execute them (outbound HTTP(S) only).

    SIGTERM or SIGINT stops claiming; running runs get --drain-seconds to finish, then they
    are cancelled and handed back to be run elsewhere. Exit codes: 0 stopped, 8 the token was
    refused (see 'opsicle explain exit-codes').
    """
    from entrypoints import eventloop
    from entrypoints.worker import resolve_token, serve_worker

    resolved = current().with_flags(
        coordinator_url=coordinator_url or None,
        token_id=token_id,
        token=token,
        concurrency=concurrency,
        labels=labels,
        runner=runner,
        drain_seconds=drain_seconds,
        docker_host=docker_host,
        approver_keys=approver_key or None,
        metrics_listen=metrics_listen,
    )
    credentials = resolve_token(resolved, token_file)
    return eventloop.run(serve_worker(resolved, name=name, token=credentials))


def _own_port(resolved: settings.Settings, listen: str | None, port: int) -> settings.Settings:
    """The role's own default port when neither a flag nor the environment or config set one
    (``listen``'s default is the controller's)."""
    if listen is None and resolved.origin("listen") == "default":
        listen = f"127.0.0.1:{port}"
    return resolved.with_flags(listen=listen)


def current() -> settings.Settings:
    return settings.current.get(settings.load())
