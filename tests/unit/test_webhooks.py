"""Policy webhooks: the YAML, its located errors, masking, payload, signature and retry rules."""

from __future__ import annotations

import base64
import json
import textwrap
from datetime import UTC, datetime, timedelta

import attrs
import pytest

from adapters.resources_yaml import dump, parse_text
from domain.approvals import Approval, ApprovalResponse, ApprovalStatus, Verdict
from domain.automations import Run, RunStatus
from domain.errors import Conflict, FieldError, Invalid
from domain.resources import (
    MASK,
    ApprovalPolicy,
    AutomationSpec,
    PolicySpec,
    PolicyWebhook,
    WebhookAuth,
    masked,
)
from domain.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    RETRY_CAP_SECONDS,
    SIGNATURE_HEADER,
    AttemptResult,
    DeliveryStatus,
    WebhookDelivery,
    after_attempt,
    judge,
    payload,
    request_headers,
    retried,
    retry_after_seconds,
    retry_delay,
    sign,
    verify,
)

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def policy(webhooks: str) -> str:
    body = textwrap.indent(textwrap.dedent(webhooks), "  ")
    return f"apiVersion: v1\ntype: ApprovalPolicy\nmetadata: {{name: p}}\nspec:\n{body}"


def read(text: str) -> PolicySpec:
    [doc] = parse_text(text, "policy.yaml")
    assert isinstance(doc.resource, ApprovalPolicy)
    return doc.resource.spec


def errors_of(text: str) -> list[FieldError]:
    with pytest.raises(Invalid) as info:
        parse_text(text, "policy.yaml")
    return list(info.value.errors)


def test_each_auth_kind_reads_and_writes_back_unchanged() -> None:
    spec = read(policy("""\
        webhooks:
          - url: https://hooks.example.com/a
            auth: {basic: {username: ops, password: pw}}
            signingSecret: whsec
            maxAttempts: 3
          - url: https://hooks.example.com/b
            auth: {bearer: {token: tok}}
          - url: http://127.0.0.1:8080/c
            auth: {header: {name: X-Api-Key, value: key}}
        """))
    assert spec.webhooks == (
        PolicyWebhook("https://hooks.example.com/a", WebhookAuth("basic", username="ops",
                      password="pw"), signing_secret="whsec", max_attempts=3),
        PolicyWebhook("https://hooks.example.com/b", WebhookAuth("bearer", value="tok")),
        PolicyWebhook("http://127.0.0.1:8080/c", WebhookAuth("header", key="X-Api-Key",
                                                              value="key")),
    )
    again = parse_text(dump(ApprovalPolicy(metadata=parse_text(
        policy("inApp: true\n"), "x")[0].resource.metadata, spec=spec)), "again.yaml")
    assert isinstance(again[0].resource, ApprovalPolicy)
    assert again[0].resource.spec == spec


def test_a_single_webhook_mapping_and_the_original_auth_spellings_read() -> None:
    spec = read(policy("""\
        webhooks:
          url: https://hooks.example.com/a
          auth: {header: {key: X-Token, value: v}}
        """))
    assert spec.webhooks == (
        PolicyWebhook("https://hooks.example.com/a", WebhookAuth("header", key="X-Token",
                                                                 value="v")),)
    bearer = read(policy("webhooks: [{url: 'https://h.example', auth: {bearer: {value: t}}}]\n"))
    assert bearer.webhooks[0].auth == WebhookAuth("bearer", value="t")


@pytest.mark.parametrize(("hook", "field", "words"), [
    ("{url: 'http://hooks.example.com/x'}", "spec.webhooks[0].url", "https://"),
    ("{url: 'ftp://hooks.example.com/x'}", "spec.webhooks[0].url", "https://"),
    ("{url: 'https://ops:pw@hooks.example.com/'}", "spec.webhooks[0].url", "auth"),
    ("{url: 'https://h.example:port/'}", "spec.webhooks[0].url", "not a valid URL"),
    ("{auth: {bearer: {token: t}}}", "spec.webhooks[0].url", "required"),
    ("{url: 'https://h.example', auth: {bearer: {}}}", "spec.webhooks[0].auth.bearer.token",
     "required"),
    ("{url: 'https://h.example', auth: {basic: {username: u}}}",
     "spec.webhooks[0].auth.basic.password", "required"),
    ("{url: 'https://h.example', auth: {header: {name: 'bad name', value: v}}}",
     "spec.webhooks[0].auth.header.name", "header name"),
    ("{url: 'https://h.example', auth: {bearer: {token: t}, basic: {username: u}}}",
     "spec.webhooks[0].auth", "exactly one"),
    ("{url: 'https://h.example', auth: {digest: {}}}", "spec.webhooks[0].auth.digest",
     "unknown field"),
    ("{url: 'https://h.example', maxAttempts: 0}", "spec.webhooks[0].maxAttempts", "1 to 20"),
    ("{url: 'https://h.example', secret: x}", "spec.webhooks[0].secret", "signingSecret"),
])
def test_a_bad_webhook_gets_a_located_error(hook: str, field: str, words: str) -> None:
    [error] = errors_of(policy(f"webhooks: [{hook}]\n"))
    assert error.field == field
    assert words in error.message
    assert error.source == "policy.yaml" and error.line == 5 and error.column is not None


@pytest.mark.parametrize("url", ["http://localhost:9/x", "http://127.0.0.9/", "http://[::1]:80/"])
def test_plain_http_is_accepted_to_loopback_only(url: str) -> None:
    assert read(policy(f"webhooks: [{{url: '{url}'}}]\n")).webhooks[0].url == url


def template(hook: str) -> str:
    return (
        "apiVersion: v1\ntype: AutomationTemplate\nmetadata: {name: t}\nspec:\n"
        f"  approvalPolicy:\n    spec:\n      webhooks: [{hook}]\n"
        "  template:\n    phases: [{name: go, image: busybox, commands: ['true']}]\n"
    )


def test_a_template_may_not_hold_webhook_secrets_but_may_name_a_bare_webhook() -> None:
    [error] = errors_of(template("{url: 'https://h.example', signingSecret: s}"))
    assert error.field == "spec.approvalPolicy.spec.webhooks[0]"
    assert "policyRef" in error.message and error.line is not None
    [doc] = parse_text(template("{url: 'https://h.example'}"), "t.yaml")
    assert doc.resource.approval_policy is not None  # type: ignore[union-attr]


def test_masked_shows_every_secret_as_stars_and_nothing_else_changes() -> None:
    spec = PolicySpec(webhooks=(
        PolicyWebhook("https://a.example", WebhookAuth("basic", username="u", password="p"),
                      signing_secret="s"),
        PolicyWebhook("https://b.example", WebhookAuth("header", key="X-K", value="v")),
        PolicyWebhook("https://c.example"),
    ))
    shown = masked(spec)
    assert shown.webhooks[0] == PolicyWebhook(
        "https://a.example", WebhookAuth("basic", username="u", password=MASK),
        signing_secret=MASK)
    assert shown.webhooks[1].auth == WebhookAuth("header", key="X-K", value=MASK)
    assert shown.webhooks[2] == spec.webhooks[2]


@pytest.mark.parametrize(("status", "result"), [
    (200, AttemptResult.DELIVERED), (204, AttemptResult.DELIVERED),
    (None, AttemptResult.RETRY), (500, AttemptResult.RETRY), (503, AttemptResult.RETRY),
    (408, AttemptResult.RETRY), (429, AttemptResult.RETRY),
    (301, AttemptResult.GIVE_UP), (400, AttemptResult.GIVE_UP), (401, AttemptResult.GIVE_UP),
    (404, AttemptResult.GIVE_UP), (410, AttemptResult.GIVE_UP),
])
def test_which_answers_are_delivered_retried_or_given_up(
        status: int | None, result: AttemptResult) -> None:
    assert judge(status) is result


def test_retry_delays_double_stay_jittered_and_are_capped() -> None:
    assert [retry_delay(n, 0.0) for n in (1, 2, 3)] == [5.0, 10.0, 20.0]
    assert [retry_delay(n, 1.0) for n in (1, 2, 3)] == [10.0, 20.0, 40.0]
    assert 5.0 < retry_delay(1, 0.5) < 10.0
    assert retry_delay(40, 1.0) == RETRY_CAP_SECONDS


def delivery(hook: PolicyWebhook, **kw: object) -> WebhookDelivery:
    fields: dict[str, object] = {
        "id": "dlv-1", "approval_id": "apr-1", "org_id": "org-1", "event": "approval.approved",
        "hook": hook, "body": '{"a":1}', "created_at": T0, "next_attempt_at": T0,
        "lease_token": "tok", "lease_until": T0 + timedelta(minutes=2)}
    fields.update(kw)
    return WebhookDelivery(**fields)  # type: ignore[arg-type]


def test_attempts_retry_until_max_attempts_then_give_up() -> None:
    d = delivery(PolicyWebhook("https://h.example", max_attempts=2))
    once = after_attempt(d, T0, 503, "HTTP 503", 0.0)
    assert (once.status, once.attempts, once.next_attempt_at) == (
        DeliveryStatus.PENDING, 1, T0 + timedelta(seconds=5))
    assert once.lease_token == "" and once.lease_until is None and once.finished_at is None
    twice = after_attempt(once, T0, None, "connection refused", 0.0)
    assert (twice.status, twice.attempts, twice.finished_at) == (DeliveryStatus.FAILED, 2, T0)
    assert twice.last_error == "connection refused"
    assert after_attempt(d, T0, 201, "", 0.0).status is DeliveryStatus.DELIVERED
    assert after_attempt(d, T0, 403, "HTTP 403", 0.0).status is DeliveryStatus.FAILED
    assert after_attempt(d, T0, None, "x", 0.0, give_up=True).status is DeliveryStatus.FAILED


@pytest.mark.parametrize(("value", "seconds"), [
    ("120", 120.0), (" 0 ", 0.0),
    # HTTP dates (IMF-fixdate and the obsolete RFC 850 form): seconds from T0; past is 0.
    ((T0 + timedelta(minutes=3)).strftime("%a, %d %b %Y %H:%M:%S GMT"), 180.0),
    ((T0 + timedelta(seconds=30)).strftime("%A, %d-%b-%y %H:%M:%S GMT"), 30.0),
    ((T0 - timedelta(hours=1)).strftime("%a, %d %b %Y %H:%M:%S GMT"), 0.0),
    ("-5", None), ("1.5", None), ("soon", None), ("", None),
])
def test_retry_after_reads_seconds_or_an_http_date(value: str, seconds: float | None) -> None:
    assert retry_after_seconds(value, T0) == seconds


def test_retry_after_replaces_the_backoff_on_429_and_503_up_to_the_cap() -> None:
    d = delivery(PolicyWebhook("https://h.example", max_attempts=5))
    for status in (429, 503):
        waited = after_attempt(d, T0, status, f"HTTP {status}", 0.0, retry_after=300.0)
        assert waited.next_attempt_at == T0 + timedelta(seconds=300)
        capped = after_attempt(d, T0, status, "", 0.0, retry_after=RETRY_CAP_SECONDS * 24)
        assert capped.next_attempt_at == T0 + timedelta(seconds=RETRY_CAP_SECONDS)
    # Other retried answers keep the backoff; the last attempt gives up whatever was asked.
    assert after_attempt(d, T0, 500, "", 0.0, retry_after=300.0).next_attempt_at == (
        T0 + timedelta(seconds=5))
    last = after_attempt(attrs.evolve(d, attempts=4), T0, 503, "", 0.0, retry_after=300.0)
    assert last.status is DeliveryStatus.FAILED


def test_only_a_given_up_delivery_is_retried_with_a_fresh_budget() -> None:
    d = delivery(PolicyWebhook("https://h.example", max_attempts=2), lease_token="",
                 lease_until=None)
    failed = after_attempt(after_attempt(d, T0, 503, "HTTP 503", 0.0), T0, None, "refused", 0.0)
    later = T0 + timedelta(hours=2)
    again = retried(failed, later)
    assert (again.status, again.attempts, again.next_attempt_at, again.finished_at) == (
        DeliveryStatus.PENDING, 0, later, None)
    assert again.last_error == "refused"  # kept until the next attempt replaces it
    with pytest.raises(Conflict, match="is pending: it is still being tried"):
        retried(again, later)
    with pytest.raises(Conflict, match="was delivered: there is nothing to retry"):
        retried(after_attempt(d, T0, 200, "", 0.0), later)


def test_headers_carry_the_delivery_id_event_signature_and_auth() -> None:
    basic = PolicyWebhook("https://h.example", WebhookAuth("basic", username="u", password="pw"))
    headers = request_headers(delivery(basic), basic)
    assert headers[DELIVERY_HEADER] == "dlv-1"
    assert headers[EVENT_HEADER] == "approval.approved"
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"u:pw").decode()
    # No signing secret: signed with the auth secret.
    assert verify("pw", b'{"a":1}', headers[SIGNATURE_HEADER])
    signed = PolicyWebhook("https://h.example", WebhookAuth("bearer", value="tok"),
                           signing_secret="whsec")
    headers = request_headers(delivery(signed), signed)
    assert headers["Authorization"] == "Bearer tok"
    assert headers[SIGNATURE_HEADER] == sign("whsec", b'{"a":1}')
    assert not verify("tok", b'{"a":1}', headers[SIGNATURE_HEADER])
    header = PolicyWebhook("https://h.example", WebhookAuth("header", key="X-K", value="v"))
    assert request_headers(delivery(header), header)["X-K"] == "v"
    bare = PolicyWebhook("https://h.example")
    assert SIGNATURE_HEADER not in request_headers(delivery(bare), bare)


def test_the_payload_describes_the_decision() -> None:
    run = Run(id="run-1", spec=AutomationSpec(phases=()), status=RunStatus.REJECTED,
              created_at=T0, name="deploy", org_id="org-1", template_id="tpl-1",
              template_version=3, requested_by="usr-1")
    approval = Approval(
        id="apr-1", run_id="run-1", requested_by="usr-1", quorum=1,
        expires_at=T0 + timedelta(hours=1), created_at=T0, org_id="org-1",
        status=ApprovalStatus.REJECTED, decided_at=T0 + timedelta(minutes=3),
        reason="rejected by bob@example.com: not now",
        responses=(ApprovalResponse("usr-2", Verdict.REJECT, T0 + timedelta(minutes=3),
                                    comment="not now"),),
    )
    body = json.loads(payload("dlv-9", approval, run, org_code="acme",
                              emails={"usr-1": "al@example.com", "usr-2": "bob@example.com"}))
    assert body["event"] == "approval.rejected" and body["decision"] == "rejected"
    assert body["deliveryId"] == "dlv-9" and body["approvalId"] == "apr-1"
    assert body["runId"] == "run-1" and body["org"] == {"id": "org-1", "code": "acme"}
    assert body["template"] == {"id": "tpl-1", "name": "deploy", "version": 3}
    assert body["reason"] == "rejected by bob@example.com: not now"
    assert body["requestedBy"] == {"userId": "usr-1", "email": "al@example.com"}
    assert body["deciders"] == [{
        "userId": "usr-2", "email": "bob@example.com", "verdict": "reject",
        "at": (T0 + timedelta(minutes=3)).isoformat(), "channel": "in-app",
        "comment": "not now"}]
    assert body["decidedAt"] == (T0 + timedelta(minutes=3)).isoformat()


@pytest.mark.parametrize(("auth", "field"), [
    ('{bearer: {token: "tok\\nX-Leak: SECRET"}}', "spec.webhooks[0].auth.bearer.token"),
    ('{bearer: {token: "SECRET\\u00e9"}}', "spec.webhooks[0].auth.bearer.token"),
    ('{header: {name: X-Key, value: "SECRET\\u0000"}}', "spec.webhooks[0].auth.header.value"),
    ('{header: {name: X-Key, value: " SECRET"}}', "spec.webhooks[0].auth.header.value"),
])
def test_a_header_secret_that_cannot_be_sent_is_refused_without_echoing_it(
    auth: str, field: str
) -> None:
    [error] = errors_of(policy(f"webhooks: [{{url: 'https://h.example', auth: {auth}}}]\n"))
    assert error.field == field
    assert "HTTP header" in error.message and "SECRET" not in error.message


def test_header_secrets_with_inner_spaces_and_punctuation_read() -> None:
    spec = read(policy(
        "webhooks: [{url: 'https://h.example', auth: {header: {name: X-Key, value: 'a b=c/+~'}}}]\n"
    ))
    assert spec.webhooks[0].auth == WebhookAuth("header", key="X-Key", value="a b=c/+~")
