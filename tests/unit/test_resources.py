"""Runbook YAML: round trips, located rejections, and never a traceback on bad input."""

from __future__ import annotations

import string

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.resources_yaml import dump, parse_text
from domain.errors import Invalid
from domain.resources import (
    RESERVED_ENV,
    ApprovalPolicy,
    ApprovalPolicyChoice,
    Automation,
    AutomationSpec,
    AutomationTemplate,
    Kind,
    Metadata,
    Owner,
    Phase,
    PolicySpec,
    Responder,
    SlackTarget,
    TelegramTarget,
    Variable,
    VariableType,
    VolumeMount,
    env_name,
)

names = st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True)
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=30)
commands = st.lists(text.filter(str.strip), min_size=1, max_size=3).map(tuple)
phases = st.lists(
    st.builds(Phase, name=names, image=names, commands=commands, timeout=st.integers(1, 3600)),
    min_size=1,
    max_size=4,
    unique_by=lambda p: p.name,
).map(tuple)
mounts = st.lists(
    st.builds(VolumeMount, host=names, container=names.map(lambda n: "/" + n)), max_size=2
).map(tuple)
specs = st.builds(AutomationSpec, phases=phases, volume_mounts=mounts)
metadata = st.builds(
    Metadata,
    name=names,
    labels=st.dictionaries(names, text, max_size=2),
    annotations=st.dictionaries(names, text, max_size=2),
)


@st.composite
def variables(draw: st.DrawFn) -> Variable:
    vtype = draw(st.sampled_from(list(VariableType)))
    default = draw(
        st.none()
        | {
            VariableType.STRING: text,
            VariableType.BOOL: st.booleans(),
            VariableType.NUMBER: st.integers(-(10**6), 10**6),
            VariableType.FLOAT: st.floats(allow_nan=False, allow_infinity=False, width=32),
        }[vtype]
    )
    vid = draw(names.filter(lambda n: env_name(n) not in RESERVED_ENV))
    return Variable(
        id=vid,
        type=vtype,
        label=draw(text),
        description=draw(text),
        default=default,
        is_required=draw(st.booleans()),
        secret=draw(st.booleans()),
    )


variable_lists = st.lists(variables(), max_size=4, unique_by=lambda v: env_name(v.id)).map(tuple)
responders = st.builds(
    Responder,
    user_id=st.integers(1, 10**9).map(str),
    mfa_seed=st.none() | st.just("JBSWY3DPEHPK3PXPJBSWY3DP"),
)
policies = st.builds(
    PolicySpec,
    id=st.just(""),
    telegram=st.lists(
        st.builds(
            TelegramTarget,
            chat_ids=st.lists(st.integers(-(10**12), 10**12), min_size=1, max_size=2).map(tuple),
            authorized_responders=st.lists(responders, max_size=2).map(tuple),
        ),
        min_size=1,
        max_size=2,
    ).map(tuple),
    slack=st.lists(
        st.builds(SlackTarget, channel_names=st.lists(names, min_size=1, max_size=2).map(tuple)),
        max_size=1,
    ).map(tuple),
)
templates = st.builds(
    AutomationTemplate,
    metadata=metadata,
    template=specs,
    variables=variable_lists,
    display_name=text,
    description=text.filter(str.strip),
    owners=st.lists(st.builds(Owner, name=names, email=st.just("a@b.example")), max_size=2).map(
        tuple
    ),
    approval_policy=st.none()
    | st.builds(ApprovalPolicyChoice, policy_ref=names)
    | st.builds(ApprovalPolicyChoice, spec=policies),
)
automations = st.builds(Automation, metadata=metadata, spec=specs, variables=variable_lists)
resources = templates | automations | st.builds(ApprovalPolicy, metadata=metadata, spec=policies)


@settings(max_examples=150, deadline=None)
@given(resources)
def test_every_resource_survives_a_yaml_round_trip(resource: object) -> None:
    [doc] = parse_text(dump(resource))  # type: ignore[arg-type]
    assert doc.resource == resource


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "apiVersion": st.sampled_from(["v1", "v2", 1]),
            "type": st.sampled_from([k.value for k in Kind] + ["Other", 3]),
            "metadata": yaml_values | st.fixed_dictionaries({"name": yaml_values}),
            "spec": yaml_values,
        }
    )
)
def test_malformed_documents_always_get_located_errors(document: dict[str, object]) -> None:
    source = yaml.safe_dump(document)
    try:
        parse_text(source, "doc.yaml")
    except Invalid as exc:
        assert exc.errors
        for error in exc.errors:
            assert error.source == "doc.yaml" and error.line is not None and error.line >= 1
            assert error.message


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=string.printable, max_size=200))
def test_arbitrary_text_never_raises_anything_but_invalid(source: str) -> None:
    try:
        parse_text(source, "x.yaml")
    except Invalid as exc:
        assert all(e.source == "x.yaml" for e in exc.errors)


BROKEN = """\
apiVersion: v1
type: AutomationTemplate
metadata:
  name: hello
spec:
  variables:
    - id: who
      type: strng
  template:
    phases:
      - name: greet
        image: busybox
        comands: ["echo hi"]
        timeout: 5s
"""


def test_errors_name_file_line_field_and_expectation() -> None:
    with pytest.raises(Invalid) as info:
        parse_text(BROKEN, "broken.yaml")
    shown = str(info.value).splitlines()
    assert (
        "broken.yaml:8:7: spec.variables[0].type: expected one of: string, bool, number, "
        "float; got a string ('strng')" in shown
    )
    assert (
        "broken.yaml:13:9: spec.template.phases[0].comands: unknown field (did you mean "
        "'commands'?); expected one of: name, image, commands, timeout" in shown
    )
    assert (
        "broken.yaml:14:9: spec.template.phases[0].timeout: expected a whole number, got a "
        "string ('5s')" in shown
    )
    assert any(
        line.startswith("broken.yaml:11:9: spec.template.phases[0].commands: is required")
        for line in shown
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("a: [1, 2", "x.yaml:1:9: not valid YAML"),
        (
            "apiVersion: v1\ntype: Automation\nmetadata: {name: a}\nspec: {phases: []}\n",
            "x.yaml:4:8: spec.phases: must have at least one entry",
        ),
        (
            "apiVersion: v1\ntype: Automation\nmetadata: {name: a}\n"
            "spec: {phases: [], phases: []}\n",
            "x.yaml:4:20: spec.phases: appears twice",
        ),
        (
            "apiVersion: v1\ntype: Job\nmetadata: {name: a}\nspec: {}\n",
            "x.yaml:2:1: type: expected one of",
        ),
        ("", "x.yaml:1:1: has no resource"),
        (
            "apiVersion: v1\ntype: AutomationTemplate\nmetadata: {name: a}\nspec:\n  variables:\n"
            "    - {id: home}\n  template: {phases: [{name: a, image: b, commands: [c]}]}\n",
            "x.yaml:6:8: spec.variables[0].id: 'home' would set $HOME",
        ),
        (
            "apiVersion: v1\ntype: AutomationTemplate\nmetadata: {name: a}\nspec:\n  variables:\n"
            "    - {id: a-b}\n    - {id: a_b}\n"
            "  template: {phases: [{name: a, image: b, commands: [c]}]}\n",
            "x.yaml:7:8: spec.variables[1].id: 'a_b' gives the same environment name $A_B as 'a-b'",
        ),
        (
            "apiVersion: v1\ntype: AutomationTemplate\nmetadata: {name: a}\nspec:\n"
            "  approvalPolicy: {policyRef: p, spec: {telegram: {chatIds: [1]}}}\n"
            "  template: {phases: [{name: a, image: b, commands: [c]}]}\n",
            "x.yaml:5:3: spec.approvalPolicy: expected exactly one of 'policyRef' or 'spec'",
        ),
        (
            "apiVersion: v1\ntype: ApprovalPolicy\nmetadata: {name: a}\nspec:\n  telegram:\n"
            "    chatIds: [1]\n    authorizedResponders: [{userId: bob}]\n",
            "x.yaml:7:29: spec.telegram.authorizedResponders[0].userId: "
            "Telegram user ids are numbers",
        ),
        (
            "apiVersion: v1\ntype: [a]\nmetadata: {name: a}\nspec: {}\n",
            "x.yaml:2:1: type: expected one of: Automation, AutomationTemplate, ApprovalPolicy, "
            "ApprovalRequest; got a list",
        ),
    ],
)
def test_rejections_point_at_the_line(source: str, expected: str) -> None:
    with pytest.raises(Invalid) as info:
        parse_text(source, "x.yaml")
    assert any(line.startswith(expected) for line in str(info.value).splitlines()), str(info.value)


def test_documents_of_the_original_format_are_accepted() -> None:
    source = """\
apiVersion: v1
type: AutomationTemplate
metadata:
  name: vars
  labels: {opsicle.io/description: "template with variables"}
spec:
  metadata:
    displayName: Basic Automation
    owners: [{name: Dennis, email: ritchie@opsicle.io}]
  approvalPolicy: {policyRef: tg-one}
  variables:
  - {id: target-host, label: Target host, type: string, default: google.com, isRequired: true}
  - {id: dry-run, label: "Dry run?", type: bool, isRequired: true}
  - {id: retries, label: Retries, type: number, default: 3}
  template:
    volumeMounts: [{host: ./tmp, container: /tmp}]
    phases:
    - {name: information-gathering, image: alpine:latest, commands: ["nslookup google.com"]}
    - {name: execution, image: alpine:latest, commands: ["wget -qO - google.com > /tmp/g.txt"]}
---
apiVersion: v1
type: ApprovalRequest
metadata: {name: tg-w-mfa}
spec:
  id: tg-w-mfa-001
  requesterId: user@company.co
  requesterName: y0l0
  message: "i can haz cheeseburger?"
  callback: {webhook: {url: "http://localhost:54321/callback/path"}}
  telegram:
  - chatIds: [267230627]
    authorizedResponders: [{userId: 267230627, mfaSeed: SPKYRLYDMW46GOQKSQRGKWRYMQI6IA4O}]
  slack:
  - channelNames: [dev-opsicle-approvals]
    authorizedResponders: [{userId: U0626N0TPJ7}]
"""
    template, request = (d.resource for d in parse_text(source))
    assert isinstance(template, AutomationTemplate)
    assert template.description == "template with variables"
    assert [v.env_name for v in template.variables] == ["TARGET_HOST", "DRY_RUN", "RETRIES"]
    assert template.approval_policy == ApprovalPolicyChoice(policy_ref="tg-one")
    assert request.kind is Kind.APPROVAL_REQUEST
    assert parse_text(dump(request))[0].resource == request


TEMPLATE = """\
apiVersion: v1
type: AutomationTemplate
metadata: {{name: {name}}}
spec:
  variables:
    - {{id: a, type: {type}, default: {default}}}
  template: {{phases: [{{name: a, image: b, commands: [c]}}]}}
"""


@pytest.mark.parametrize(
    ("name", "vtype", "default", "expected"),
    [
        (
            "a",
            "string",
            "2024-13-45",
            "x.yaml:6:29: spec.variables[0].default: '2024-13-45' is not a valid date or time; "
            "quote it if it is text",
        ),
        (
            "2024-02-30",
            "string",
            "x",
            "x.yaml:3:12: metadata.name: '2024-02-30' is not a valid date or time",
        ),
        (
            "a",
            "string",
            "2024-01-01 25:00:00",
            "x.yaml:6:29: spec.variables[0].default: '2024-01-01 25:00:00' is not a valid date",
        ),
        (
            "a",
            "float",
            "!!float abc",
            "x.yaml:6:28: spec.variables[0].default: 'abc' is not a valid number",
        ),
        (
            "a",
            "number",
            "!!int 0x",
            "x.yaml:6:29: spec.variables[0].default: '0x' is not a valid whole number",
        ),
        (
            "a",
            "number",
            "1" * 5000,
            "x.yaml:6:29: spec.variables[0].default: '1111111111111111111111111111111111111...' "
            "is not a valid whole number",
        ),
        (
            "a",
            "float",
            ".inf",
            "x.yaml:6:28: spec.variables[0].default: expected a finite number, got a number (inf)",
        ),
        ("a", "float", "-.inf", "x.yaml:6:28: spec.variables[0].default: expected a finite"),
        ("a", "float", ".nan", "x.yaml:6:28: spec.variables[0].default: expected a finite"),
        ("a", "float", "1" * 400, "x.yaml:6:28: spec.variables[0].default: expected a finite"),
        (
            "a",
            "string",
            "x" * 70_000,
            "x.yaml:6:29: spec.variables[0].default: is too long (70000 bytes as UTF-8); "
            "at most 65536 bytes (64 KiB) fit in a phase's environment",
        ),
    ],
)
def test_scalars_that_cannot_be_read_are_located(
    name: str, vtype: str, default: str, expected: str
) -> None:
    source = TEMPLATE.format(name=name, type=vtype, default=default)
    with pytest.raises(Invalid) as info:
        parse_text(source, "x.yaml")
    assert any(line.startswith(expected) for line in str(info.value).splitlines()), str(info.value)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("a: &x [*x]\n", "x.yaml:1:1: an alias refers to a mapping or list it is inside"),
        ("&x {a: *x}\n", "x.yaml:1:1: an alias refers to a mapping or list it is inside"),
        ("a: &x {b: &y {<<: *x}, <<: *y}\n", "x.yaml:1:1: an alias refers to a mapping or list"),
        ("[" * 3000, "x.yaml:1:100: not valid YAML: nests deeper than 100 levels"),
        ("? !!set {a}\n: 1\n", "x.yaml:1:3: {'a': None}: unknown field"),
    ],
)
def test_endless_or_deep_documents_are_refused(source: str, expected: str) -> None:
    with pytest.raises(Invalid) as info:
        parse_text(source, "x.yaml")
    assert any(line.startswith(expected) for line in str(info.value).splitlines()), str(info.value)


def test_a_document_that_expands_without_bound_is_refused() -> None:
    # Six levels of ten aliases each: a million values from a few hundred bytes.
    source = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 7)
    )
    with pytest.raises(Invalid) as info:
        parse_text(source, "lol.yaml")
    assert str(info.value) == (
        "lol.yaml:1:1: has more than 100000 values once its aliases are expanded"
    )


def test_anchors_aliases_and_merge_keys_still_work() -> None:
    source = """\
apiVersion: v1
type: Automation
metadata: {name: a}
spec:
  phases:
    - &base {name: one, image: busybox, commands: &cmds [echo hi], timeout: 5}
    - {<<: *base, name: two}
    - {name: three, image: busybox, commands: *cmds}
"""
    [doc] = parse_text(source)
    assert isinstance(doc.resource, Automation)
    assert doc.resource.spec.phases == (
        Phase("one", "busybox", ("echo hi",), 5),
        Phase("two", "busybox", ("echo hi",), 5),
        Phase("three", "busybox", ("echo hi",)),
    )


def test_a_long_key_over_many_values_is_refused() -> None:
    # Every value's path repeats the key: 100 KB times 200 values would be 20 MB of paths.
    source = "? " + "k" * 100_000 + "\n: [" + "1, " * 200 + "]\n"
    with pytest.raises(Invalid) as info:
        parse_text(source, "keys.yaml")
    assert str(info.value) == (
        "keys.yaml:1:1: is too big to read: the paths of its fields add up to more than "
        "10000000 characters"
    )
