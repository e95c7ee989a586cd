"""Template texts and helpers shared by the template and run tests."""

from __future__ import annotations

import re
import textwrap

from adapters.memory.mail import InMemoryMailer


def template_text(name: str, *, echo: str = "hello", approval: bool = False) -> str:
    """A template with a required number, a secret and a defaulted string variable."""
    text = f"""\
        apiVersion: v1
        type: AutomationTemplate
        metadata:
          name: {name}
        spec:
          variables:
            - id: times
              type: number
              isRequired: true
            - id: api-token
              isRequired: true
              secret: true
            - id: who
              default: world
          template:
            phases:
              - name: greet
                image: busybox:latest
                commands: ['echo "{echo} $WHO"']
              - name: second
                image: busybox:latest
                commands: ['true']
        """
    text = textwrap.dedent(text)
    if approval:
        text = text.replace(
            "  variables:", "  approvalPolicy:\n    policyRef: ops-approvers\n  variables:"
        )
    return text


def simple_text(name: str, *, echo: str = "hello") -> str:
    """A template whose variables all have defaults."""
    return textwrap.dedent(
        f"""\
        apiVersion: v1
        type: AutomationTemplate
        metadata:
          name: {name}
        spec:
          variables:
            - id: who
              default: world
          template:
            phases:
              - name: greet
                image: busybox:latest
                commands: ['echo "{echo} $WHO"']
        """
    )


def template_code(mailer: InMemoryMailer, email: str) -> str:
    match = re.search(r"join code: (\S+)", mailer.to(email)[-1].text)
    assert match
    return match.group(1)
