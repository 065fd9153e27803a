"""Typed policy errors. Each carries a stable `code` (the problem+json type suffix) and a `kind` that
the HTTP layer maps to a status; the core itself knows nothing of HTTP.

A refused policy set raises exactly one of these, listing every reason, so an operator uploading a set
sees all that is wrong at once, and the set that was active stays active.
"""

from __future__ import annotations

from typing import ClassVar, Literal

ErrorKind = Literal["invalid", "unavailable"]


class PolicyError(Exception):
    code: ClassVar[str] = "policy-error"
    kind: ClassVar[ErrorKind] = "invalid"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SchemaInvalid(PolicyError):
    """The Cedar schema does not parse; without it no policy set can be validated, so none is loaded."""

    code = "policy-schema-invalid"
    kind = "unavailable"


class PolicySetInvalid(PolicyError):
    """The policy text does not parse, fails validation against the schema, contains templates, or has
    a policy without a unique `@id` (decisions report policies by id). `errors` lists every problem."""

    code = "policy-set-invalid"

    def __init__(self, errors: tuple[str, ...]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


class EntitiesInvalid(PolicyError):
    """Entity data does not parse or does not conform to the schema (unknown type or attribute, wrong
    attribute type, a naive timestamp)."""

    code = "policy-entities-invalid"


class DecisionRequestInvalid(PolicyError):
    """Cedar could not build the request: unknown action, a principal or resource type the action does
    not apply to, or a context that does not match the action's context type."""

    code = "policy-request-invalid"
