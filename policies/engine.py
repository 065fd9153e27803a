"""The policy engine: one schema, one active pre-parsed policy set, decisions.

Everything expensive happens once: the schema is parsed at construction, a policy set when it is
loaded or reloaded, an entity set when it is built. A decision passes the parsed handles to Cedar,
which then only evaluates. Reload swaps one immutable object, so a decision in flight sees either the
old set or the new one, never a mix, and a refused set leaves the active one untouched.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cedarpy

from policies.entities import EntityRef
from policies.errors import DecisionRequestInvalid, EntitiesInvalid, PolicySetInvalid, SchemaInvalid
from policies.policyset import CompiledPolicies, compile_policies

POLICY_DIR = Path(__file__).parent
SCHEMA_FILE = "schema.cedarschema"


@dataclass(frozen=True, slots=True)
class Decision:
    """`reasons` are the `@id`s of the determining policies: the permits that allowed, or the forbids
    that refused (empty for a default deny). `errors` are evaluation errors; any error denies."""

    allowed: bool
    reasons: tuple[str, ...]
    errors: tuple[str, ...]
    policy_version: str


@dataclass(frozen=True, slots=True)
class EntitySet:
    """Entities parsed and checked against the schema once, reusable across decisions."""

    handle: cedarpy.Entities

    def __len__(self) -> int:
        return len(self.handle)


def read_policy_text(directory: Path = POLICY_DIR) -> str:
    files = sorted(directory.glob("*.cedar"))
    if not files:
        raise PolicySetInvalid((f"no .cedar files in {directory}",))
    return "\n".join(f.read_text(encoding="utf-8") for f in files)


class PolicyEngine:
    def __init__(self, schema_text: str, policy_text: str) -> None:
        try:
            self._schema = cedarpy.Schema.from_str(schema_text)
        except ValueError as exc:
            raise SchemaInvalid(str(exc)) from exc
        self._active = compile_policies(policy_text, self._schema)

    @classmethod
    def from_directory(cls, directory: Path = POLICY_DIR) -> PolicyEngine:
        schema = directory / SCHEMA_FILE
        if not schema.is_file():
            raise SchemaInvalid(f"no {SCHEMA_FILE} in {directory}")
        return cls(schema.read_text(encoding="utf-8"), read_policy_text(directory))

    @property
    def version(self) -> str:
        return self._active.version

    @property
    def policy_text(self) -> str:
        return self._active.text

    @property
    def policy_ids(self) -> tuple[str, ...]:
        return self._active.ids

    def reload(self, policy_text: str) -> str:
        """Validate and activate a new policy set; return its version. On PolicySetInvalid the
        active set is unchanged."""
        compiled = compile_policies(policy_text, self._schema)
        self._active = compiled  # one reference swap: atomic for concurrent decisions
        return compiled.version

    def entities(self, records: Iterable[Mapping[str, object]], base: EntitySet | None = None) -> EntitySet:
        """Parse entity records (see policies.entities) into a reusable set, validated against the
        schema; with `base`, only the new records are parsed and added to a copy of it."""
        text = json.dumps(list(records))
        try:
            if base is None:
                return EntitySet(cedarpy.Entities.from_json_str(text, self._schema))
            return EntitySet(base.handle.with_added_json_str(text, self._schema))
        except ValueError as exc:
            raise EntitiesInvalid(str(exc)) from exc

    def decide(
        self,
        principal: EntityRef,
        action: str,
        resource: EntityRef,
        context: Mapping[str, object] | None,
        entities: EntitySet,
    ) -> Decision:
        active = self._active
        request = {
            "principal": principal.json(),
            "action": {"type": "Action", "id": action},
            "resource": resource.json(),
            "context": json.dumps(dict(context or {})),
        }
        # One request: cedarpy's single call, without the batch's list building on either side.
        result = cedarpy.is_authorized(request, active.handle, entities.handle, schema=self._schema)
        return _decision(result, resource, active)

    def decide_batch(
        self,
        principal: EntityRef,
        action: str,
        resources: Sequence[EntityRef],
        context: Mapping[str, object] | None,
        entities: EntitySet,
    ) -> list[Decision]:
        """One decision per resource, in order, all under the same active policy set."""
        active = self._active  # read once: a reload during the batch does not split it
        # Serialised once and passed as text, which cedarpy forwards as is, not once per resource.
        ctx = json.dumps(dict(context or {}))
        who = principal.json()
        what = {"type": "Action", "id": action}
        requests = [
            {"principal": who, "action": what, "resource": r.json(), "context": ctx} for r in resources
        ]
        results = cedarpy.is_authorized_batch(requests, active.handle, entities.handle, schema=self._schema)
        return [
            _decision(result, resource, active) for result, resource in zip(results, resources, strict=True)
        ]


def _decision(result: cedarpy.AuthzResult, resource: EntityRef, active: CompiledPolicies) -> Decision:
    errors = tuple(result.diagnostics.errors)
    if result.decision is cedarpy.Decision.NoDecision:
        # Cedar evaluated nothing: the request itself does not fit the schema.
        raise DecisionRequestInvalid(f"{resource.type}::{resource.id!r}: " + "; ".join(errors))
    if errors:
        # Fail closed: a policy that could not be evaluated (missing entity or attribute) might have
        # been a forbid, and Cedar skips erroring policies, so its silence must not let a permit through.
        return Decision(allowed=False, reasons=(), errors=errors, policy_version=active.version)
    reasons = tuple(sorted(result.diagnostics.reasons))
    return Decision(allowed=result.allowed, reasons=reasons, errors=(), policy_version=active.version)
