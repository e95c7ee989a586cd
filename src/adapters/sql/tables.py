"""SQLAlchemy Core tables of the platform data, run logs and audit log, and their column types."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect

metadata = sa.MetaData()

# Binary collation on MySQL so that names and ids compare exactly as they do on SQLite;
# case-insensitive lookups use explicit lower-cased key columns instead.
TABLE_OPTIONS: dict[str, Any] = {
    "mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin",
}
ID = 64
NAME = 255

LongText = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
Blob = sa.LargeBinary().with_variant(mysql.MEDIUMBLOB(), "mysql", "mariadb")


class UtcDateTime(sa.TypeDecorator[datetime]):
    """Stored as naive UTC with microseconds; always read back timezone-aware (UTC)."""

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in {"mysql", "mariadb"}:
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        # A naive value is taken as UTC already: the domain only makes aware ones.
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _id(name: str = "id", *args: Any, **kw: Any) -> sa.Column[str]:
    return sa.Column(name, sa.String(ID), *args, **kw)


users = sa.Table(
    "users", metadata,
    _id(primary_key=True),
    sa.Column("email", sa.String(NAME), nullable=False),
    sa.Column("email_key", sa.String(NAME), nullable=False, unique=True),
    sa.Column("password_hash", sa.Text, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("email_verified_at", UtcDateTime),
    sa.Column("disabled_at", UtcDateTime),
    **TABLE_OPTIONS,
)

orgs = sa.Table(
    "orgs", metadata,
    _id(primary_key=True),
    sa.Column("name", sa.String(NAME), nullable=False),
    sa.Column("code", sa.String(NAME), nullable=False),
    sa.Column("code_key", sa.String(NAME), nullable=False, unique=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    _id("created_by"),
    **TABLE_OPTIONS,
)

memberships = sa.Table(
    "memberships", metadata,
    _id("org_id", sa.ForeignKey("orgs.id", ondelete="CASCADE"), primary_key=True),
    _id("user_id", sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("joined_at", UtcDateTime, nullable=False),
    sa.Index("ix_memberships_user", "user_id"),
    **TABLE_OPTIONS,
)

roles = sa.Table(
    "roles", metadata,
    _id(primary_key=True),
    _id("org_id", sa.ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(NAME), nullable=False),
    sa.Column("builtin", sa.Boolean, nullable=False),
    sa.UniqueConstraint("org_id", "name", name="uq_roles_org_name"),
    **TABLE_OPTIONS,
)

# One row per resource a role mentions: the allow and deny bitmasks of domain Action flags.
role_grants = sa.Table(
    "role_grants", metadata,
    _id("role_id", sa.ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("resource", sa.String(32), primary_key=True),
    sa.Column("allow_mask", sa.Integer, nullable=False),
    sa.Column("deny_mask", sa.Integer, nullable=False),
    **TABLE_OPTIONS,
)

role_assignments = sa.Table(
    "role_assignments", metadata,
    _id("org_id", primary_key=True),
    _id("user_id", primary_key=True),
    _id("role_id", sa.ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True),
    sa.ForeignKeyConstraint(["org_id", "user_id"], ["memberships.org_id", "memberships.user_id"],
                            ondelete="CASCADE", name="fk_role_assignments_membership"),
    sa.Index("ix_role_assignments_role", "role_id"),
    **TABLE_OPTIONS,
)

worker_tokens = sa.Table(
    "worker_tokens", metadata,
    _id(primary_key=True),
    _id("org_id", sa.ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("name", sa.String(NAME), nullable=False),
    sa.Column("secret_hash", sa.Text, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    _id("created_by"),
    sa.Column("revoked_at", UtcDateTime),
    sa.Column("rotated_at", UtcDateTime),
    **TABLE_OPTIONS,
)

token_roles = sa.Table(
    "token_roles", metadata,
    _id("token_id", sa.ForeignKey("worker_tokens.id", ondelete="CASCADE"), primary_key=True),
    _id("role_id", sa.ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True),
    sa.Index("ix_token_roles_role", "role_id"),
    **TABLE_OPTIONS,
)

# One row per user: the TOTP secret, which counts once confirmed.
user_mfa = sa.Table(
    "user_mfa", metadata,
    _id("user_id", sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("secret", sa.Text, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("confirmed_at", UtcDateTime),
    sa.Column("last_step", sa.BigInteger),
    **TABLE_OPTIONS,
)

user_recovery_codes = sa.Table(
    "user_recovery_codes", metadata,
    _id("user_id", sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("code_hash", sa.String(NAME), primary_key=True),
    sa.Column("used_at", UtcDateTime),
    **TABLE_OPTIONS,
)

# Email verification and password reset codes; only their hashes are stored.
user_codes = sa.Table(
    "user_codes", metadata,
    _id(primary_key=True),
    _id("user_id", sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("purpose", sa.String(32), nullable=False),
    sa.Column("code_hash", sa.String(NAME), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Column("used_at", UtcDateTime),
    sa.Index("ix_user_codes_hash", "purpose", "code_hash"),
    sa.Index("ix_user_codes_user", "user_id", "purpose"),
    **TABLE_OPTIONS,
)

# ``pending_key`` is the lower-cased email while the invitation is pending and NULL after:
# the unique index then allows one pending invitation per org and email (MySQL has no
# partial indexes), while answered ones pile up freely.
org_invitations = sa.Table(
    "org_invitations", metadata,
    _id(primary_key=True),
    _id("org_id", sa.ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("email", sa.String(NAME), nullable=False),
    sa.Column("email_key", sa.String(NAME), nullable=False),
    sa.Column("pending_key", sa.String(NAME)),
    sa.Column("member_type", sa.String(32), nullable=False),
    _id("inviter_id", nullable=False),
    sa.Column("code_hash", sa.String(NAME), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("answered_at", UtcDateTime),
    sa.UniqueConstraint("org_id", "pending_key", name="uq_org_invitations_pending"),
    sa.Index("ix_org_invitations_email", "email_key", "status", "created_at"),
    sa.Index("ix_org_invitations_code", "code_hash"),
    sa.Index("ix_org_invitations_org", "org_id", "created_at"),
    **TABLE_OPTIONS,
)

# ``owner_key`` is "org:<id>" or "user:<id>": one unique index covers both kinds of owner.
templates = sa.Table(
    "templates", metadata,
    _id(primary_key=True),
    sa.Column("name", sa.String(NAME), nullable=False),
    sa.Column("owner_key", sa.String(ID + 8), nullable=False),
    _id("org_id", index=True),
    _id("owner_id"),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("default_version", sa.Integer, nullable=False),
    sa.Column("latest_version", sa.Integer, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("owner_key", "name", name="uq_templates_owner_name"),
    **TABLE_OPTIONS,
)

template_versions = sa.Table(
    "template_versions", metadata,
    _id("template_id", sa.ForeignKey("templates.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("content", LongText, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    _id("created_by"),
    **TABLE_OPTIONS,
)

# Runs outlive their templates and members, so they hold ids without foreign keys.
runs = sa.Table(
    "runs", metadata,
    _id(primary_key=True),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("name", sa.String(NAME), nullable=False),
    _id("org_id"),
    _id("template_id"),
    sa.Column("template_version", sa.Integer),
    _id("requested_by"),
    sa.Column("comment", sa.Text, nullable=False),
    sa.Column("spec", LongText, nullable=False),
    sa.Column("variables", LongText, nullable=False),
    sa.Column("phases", LongText, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    _id("worker_id"),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime),
    sa.Column("started_at", UtcDateTime),
    sa.Column("finished_at", UtcDateTime),
    sa.Column("lease_expires_at", UtcDateTime),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    # Secret variable values sealed for the worker (migration 0004); NULL: none.
    sa.Column("sealed_secrets", LongText),
    # The signed approval grant (migration 0006); NULL: the run needed no approval.
    sa.Column("approval_grant", sa.Text),
    sa.Index("ix_runs_created", "created_at", "id"),
    sa.Index("ix_runs_org_created", "org_id", "created_at", "id"),
    sa.Index("ix_runs_template_created", "template_id", "created_at", "id"),
    sa.Index("ix_runs_status", "status"),
    # The reaper's scan (running runs by lease end) and a run's place in its org's queue.
    sa.Index("ix_runs_status_lease", "status", "lease_expires_at"),
    sa.Index("ix_runs_org_status_created", "org_id", "status", "created_at", "id"),
    **TABLE_OPTIONS,
)

# Messages staged with the change they announce; a relay publishes them and stamps the row.
outbox = sa.Table(
    "outbox", metadata,
    _id(primary_key=True),
    sa.Column("topic", sa.String(NAME), nullable=False),
    sa.Column("body", Blob, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("published_at", UtcDateTime),
    sa.Index("ix_outbox_pending", "published_at", "created_at", "id"),
    **TABLE_OPTIONS,
)

# A user's rights on a personal template, as a bitmask of domain TemplateRight flags.
template_grants = sa.Table(
    "template_grants", metadata,
    _id("template_id", sa.ForeignKey("templates.id", ondelete="CASCADE"), primary_key=True),
    _id("user_id", primary_key=True),
    sa.Column("rights", sa.Integer, nullable=False),
    sa.Column("granted_at", UtcDateTime, nullable=False),
    _id("granted_by"),
    sa.Index("ix_template_grants_user", "user_id"),
    **TABLE_OPTIONS,
)

# ``pending_key`` works as in org_invitations: one pending invitation per template and email.
template_invitations = sa.Table(
    "template_invitations", metadata,
    _id(primary_key=True),
    _id("template_id", sa.ForeignKey("templates.id", ondelete="CASCADE"), nullable=False),
    sa.Column("email", sa.String(NAME), nullable=False),
    sa.Column("email_key", sa.String(NAME), nullable=False),
    sa.Column("pending_key", sa.String(NAME)),
    sa.Column("rights", sa.Integer, nullable=False),
    _id("inviter_id", nullable=False),
    sa.Column("code_hash", sa.String(NAME), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("answered_at", UtcDateTime),
    sa.UniqueConstraint("template_id", "pending_key", name="uq_template_invitations_pending"),
    sa.Index("ix_template_invitations_email", "email_key", "status", "created_at"),
    sa.Index("ix_template_invitations_code", "code_hash"),
    sa.Index("ix_template_invitations_template", "template_id", "created_at"),
    **TABLE_OPTIONS,
)

# The embedded queue, one topic per logical queue. ``seq`` orders publishes; a row is
# deliverable while ``acked_at`` is NULL and ``available_at`` has passed. A delivery pushes
# ``available_at`` to its ack deadline and sets ``delivered``; an ack stamps ``acked_at`` and
# the row stays as a tombstone for the dedupe window, so a republish of the id is dropped.
queue_messages = sa.Table(
    "queue_messages", metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("topic", sa.String(NAME), nullable=False),
    sa.Column("id", sa.String(NAME), nullable=False),
    sa.Column("body", Blob, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("available_at", UtcDateTime, nullable=False),
    sa.Column("delivered", sa.Boolean, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("acked_at", UtcDateTime),
    sa.UniqueConstraint("topic", "id", name="uq_queue_messages_topic_id"),
    sa.Index("ix_queue_messages_ready", "topic", "acked_at", "available_at"),
    **TABLE_OPTIONS,
)

workers = sa.Table(
    "workers", metadata,
    _id(primary_key=True),
    _id("org_id", nullable=False, index=True),
    sa.Column("name", sa.String(NAME), nullable=False),
    sa.Column("version", sa.String(NAME), nullable=False),
    sa.Column("last_seen_at", UtcDateTime, nullable=False),
    _id("token_id"),
    sa.Column("labels", sa.Text, nullable=False),
    sa.Column("runs_in_progress", sa.Integer, nullable=False),
    **TABLE_OPTIONS,
)

# A run's approval request (migration 0005). ``policy`` is the policy snapshot as JSON in the
# YAML format; ``responses`` and ``messages`` are JSON too: they are read with their request.
approvals = sa.Table(
    "approvals", metadata,
    _id(primary_key=True),
    _id("run_id", nullable=False, unique=True),
    _id("org_id", nullable=False),
    _id("requested_by", nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("quorum", sa.Integer, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Column("decided_at", UtcDateTime),
    sa.Column("policy", LongText, nullable=False),
    sa.Column("responses", LongText, nullable=False),
    sa.Column("messages", LongText, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("grant", LongText),
    sa.Index("ix_approvals_org_created", "org_id", "created_at", "id"),
    sa.Index("ix_approvals_status_expires", "status", "expires_at"),
    **TABLE_OPTIONS,
)

# Who may answer a request: one row per (request, user), for "requests I may answer".
approval_responders = sa.Table(
    "approval_responders", metadata,
    _id("approval_id", sa.ForeignKey("approvals.id", ondelete="CASCADE"), primary_key=True),
    _id("user_id", primary_key=True),
    sa.Index("ix_approval_responders_user", "user_id"),
    **TABLE_OPTIONS,
)

# ApprovalPolicy resources kept in an org; ``content`` is the resource as JSON.
approval_policies = sa.Table(
    "approval_policies", metadata,
    _id(primary_key=True),
    _id("org_id", sa.ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(NAME), nullable=False),
    sa.Column("content", LongText, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    _id("created_by", nullable=False),
    sa.Column("updated_at", UtcDateTime),
    sa.UniqueConstraint("org_id", "name", name="uq_approval_policies_org_name"),
    **TABLE_OPTIONS,
)

org_approval_settings = sa.Table(
    "org_approval_settings", metadata,
    _id("org_id", sa.ForeignKey("orgs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("required", sa.Boolean, nullable=False),
    sa.Column("labels", sa.Text, nullable=False),
    sa.Column("policy_ref", sa.String(NAME)),
    sa.Column("updated_at", UtcDateTime),
    **TABLE_OPTIONS,
)

# Webhook deliveries of approval decisions (migration 0009), added with the decision. ``hook``
# is the webhook as JSON with its secrets sealed; ``body`` is what every attempt sends.
webhook_deliveries = sa.Table(
    "webhook_deliveries", metadata,
    _id(primary_key=True),
    _id("approval_id", nullable=False, index=True),
    _id("org_id", nullable=False),
    sa.Column("event", sa.String(64), nullable=False),
    sa.Column("hook", LongText, nullable=False),
    sa.Column("body", LongText, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_status", sa.Integer),
    sa.Column("last_error", sa.Text, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("next_attempt_at", UtcDateTime, nullable=False),
    _id("lease_token"),
    sa.Column("lease_until", UtcDateTime),
    sa.Column("finished_at", UtcDateTime),
    sa.Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    sa.Index("ix_webhook_deliveries_org_created", "org_id", "created_at"),
    # The hourly purge looks for deliveries that finished before a cutoff.
    sa.Index("ix_webhook_deliveries_finished", "finished_at"),
    **TABLE_OPTIONS,
)

# A log is the concatenation of its chunks; ``end_offset`` = ``start_offset`` + length of data.
run_log_chunks = sa.Table(
    "run_log_chunks", metadata,
    _id("run_id", primary_key=True),
    sa.Column("start_offset", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("end_offset", sa.BigInteger, nullable=False),
    sa.Column("data", Blob, nullable=False),
    **TABLE_OPTIONS,
)

# ``seq`` is the chain order; ``audit_chain_head`` holds the last hash in its single row and
# is the lock every append takes, so two appends never chain to the same predecessor.
audit_events = sa.Table(
    "audit_events", metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    _id("id", nullable=False, unique=True),
    sa.Column("at", UtcDateTime, nullable=False, index=True),
    sa.Column("actor", sa.String(NAME), nullable=False, index=True),
    sa.Column("verb", sa.String(NAME), nullable=False),
    sa.Column("resource_type", sa.String(NAME), nullable=False),
    sa.Column("resource_id", sa.String(NAME), nullable=False),
    _id("org_id", index=True),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("source_ip", sa.String(64), nullable=False),
    sa.Column("user_agent", sa.Text, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("previous_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    **TABLE_OPTIONS,
)

audit_chain_head = sa.Table(
    "audit_chain_head", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("last_hash", sa.String(64), nullable=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    **TABLE_OPTIONS,
)

# Audit events committed in the same transaction as the change they record, waiting for the
# forwarder to append them to a separate audit store (MongoDB); ``seq`` is their order.
audit_outbox = sa.Table(
    "audit_outbox", metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    _id("id", nullable=False, unique=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("actor", sa.String(NAME), nullable=False),
    sa.Column("verb", sa.String(NAME), nullable=False),
    sa.Column("resource_type", sa.String(NAME), nullable=False),
    sa.Column("resource_id", sa.String(NAME), nullable=False),
    _id("org_id"),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("source_ip", sa.String(64), nullable=False),
    sa.Column("user_agent", sa.Text, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    **TABLE_OPTIONS,
)

# The one row whose owner may forward the audit outbox until ``expires_at`` (a lease), so
# forwarders in several processes take turns rather than interleave.
audit_forwarder = sa.Table(
    "audit_forwarder", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    _id("owner", nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    **TABLE_OPTIONS,
)

# Which Opsicle user a Telegram or Slack identity is (opsicle link telegram|slack).
chat_links = sa.Table(
    "chat_links", metadata,
    sa.Column("platform", sa.String(16), primary_key=True),
    sa.Column("chat_user_id", sa.String(64), primary_key=True),
    _id("user_id", sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("chat_username", sa.String(NAME), nullable=False),
    sa.Column("linked_at", UtcDateTime, nullable=False),
    **TABLE_OPTIONS,
)

# Which approver process posts an approval's messages on a chat channel now (a lease).
# The approver's grant signing keys, one ring per name ("approver" in production): the ring's
# row is created with its first key under the primary key, so two processes starting at once
# on an empty store keep one key, and a rotation moves ``current_key_id`` conditionally.
grant_key_rings = sa.Table(
    "grant_key_rings", metadata,
    _id("ring", primary_key=True),
    _id("current_key_id", nullable=False),
    **TABLE_OPTIONS,
)

# ``sealed_private`` is sealed with the server's secret key; ``expires_at`` is when a retired
# key may be dropped (every grant it signed has expired by then).
grant_keys = sa.Table(
    "grant_keys", metadata,
    _id("ring", primary_key=True),
    _id("key_id", primary_key=True),
    sa.Column("public_key", sa.String(ID), nullable=False),
    sa.Column("sealed_private", sa.Text),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("retired_at", UtcDateTime),
    sa.Column("expires_at", UtcDateTime),
    **TABLE_OPTIONS,
)

relay_claims = sa.Table(
    "relay_claims", metadata,
    _id("approval_id", primary_key=True),
    sa.Column("channel", sa.String(32), primary_key=True),
    sa.Column("owner", sa.String(NAME), nullable=False),
    sa.Column("until", UtcDateTime, nullable=False),
    sa.Column("fence", sa.Integer, nullable=False),
    **TABLE_OPTIONS,
)
