"""The YAML reader the template and run use cases get: one AutomationTemplate per text."""

from __future__ import annotations

from functools import lru_cache

from adapters.resources_yaml import parse_text
from domain.errors import FieldError, Invalid
from domain.resources import ApprovalPolicy, AutomationTemplate, Kind


# A stored template version never changes, and every run of it reads it again: the parsed,
# immutable result is kept for the texts seen last (errors are not kept).
@lru_cache(maxsize=64)
def read_template(text: str, source: str) -> AutomationTemplate:
    """The one AutomationTemplate in ``text``; ``Invalid`` names the file, line and field."""
    docs = parse_text(text, source, expected=(Kind.AUTOMATION_TEMPLATE,))
    if len(docs) != 1:
        raise Invalid(
            f"{source} holds {len(docs)} templates; expected one",
            errors=(FieldError("", f"holds {len(docs)} templates; submit each alone", source),),
        )
    resource = docs[0].resource
    assert isinstance(resource, AutomationTemplate)  # the expected kind guarantees it
    return resource


def read_policy(text: str, source: str) -> ApprovalPolicy:
    """The one ApprovalPolicy in ``text``; ``Invalid`` names the file, line and field."""
    docs = parse_text(text, source, expected=(Kind.APPROVAL_POLICY,))
    if len(docs) != 1:
        raise Invalid(
            f"{source} holds {len(docs)} approval policies; expected one",
            errors=(FieldError("", f"holds {len(docs)} policies; submit each alone", source),),
        )
    resource = docs[0].resource
    assert isinstance(resource, ApprovalPolicy)  # the expected kind guarantees it
    return resource
