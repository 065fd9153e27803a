"""Turning policy text into an active, pre-parsed Cedar policy set — or refusing it.

Steps, in order; the first two stop at their error, the rest collect every problem:
1. parse the text (Cedar syntax);
2. refuse templates: a template grants nothing until linked, and links are not managed here;
3. require a unique, non-empty `@id` on every policy: the ids are what decisions report;
4. validate against the schema (strict mode: types, attributes, actions' principal/resource types).
The set is then rebuilt with each policy's Cedar id set to its `@id`, so Cedar's own diagnostics
(determining policies, evaluation errors) name policies by `@id` with no mapping per decision.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import cedarpy
from cedarpy import pst

from policies.errors import PolicySetInvalid


@dataclass(frozen=True, slots=True)
class CompiledPolicies:
    handle: cedarpy.PolicySet
    text: str
    version: str  # SHA-256 of the text: what an audit record names
    ids: tuple[str, ...]


def compile_policies(text: str, schema: cedarpy.Schema) -> CompiledPolicies:
    try:
        parsed = cedarpy.PolicySet.from_str(text).to_pst()
    except ValueError as exc:
        raise PolicySetInvalid((f"parse error: {exc}",)) from exc
    if parsed.templates or parsed.template_links:
        raise PolicySetInvalid(("templates are not supported: write static policies",))

    errors: list[str] = []
    renamed: dict[str, pst.Template] = {}
    for position, policy in parsed.static_policies.items():
        policy_id = policy.annotations.get("id", "")
        if not policy_id:
            errors.append(f"[{position}] policy has no @id annotation")
        elif policy_id in renamed:
            errors.append(f"[{policy_id}] @id used by more than one policy")
        else:
            renamed[policy_id] = dataclasses.replace(policy, id=policy_id)

    result = cedarpy.validate_policies(text, schema)
    names = result.id_annotations_by_policy_id
    errors.extend(f"[{names.get(e.policy_id, e.policy_id)}] {e.error}" for e in result.errors)
    if errors:
        raise PolicySetInvalid(tuple(errors))

    handle = cedarpy.PolicySet.from_pst(
        pst.PolicySet(templates={}, static_policies=renamed, template_links=())
    )
    version = hashlib.sha256(text.encode()).hexdigest()
    return CompiledPolicies(handle=handle, text=text, version=version, ids=tuple(sorted(renamed)))
