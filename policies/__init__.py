"""Who may do what: the Cedar schema, the `.cedar` policies beside it, and the engine that decides.

Pure: no web, database, TPM or Vault library. The adapters build entities from live state with the
dataclasses in `policies.entities` and ask `PolicyEngine.decide` / `decide_batch`.
"""

from policies.engine import Decision, EntitySet, PolicyEngine, read_policy_text
from policies.entities import (
    AUTHORITY,
    ClientKind,
    ClientPrincipal,
    EntityRef,
    EvidenceState,
    FleetState,
    ReleaseState,
    TenderState,
    TruckState,
    authority_entity,
    gate_context,
)
from policies.errors import (
    DecisionRequestInvalid,
    EntitiesInvalid,
    PolicyError,
    PolicySetInvalid,
    SchemaInvalid,
)

__all__ = [
    "AUTHORITY",
    "ClientKind",
    "ClientPrincipal",
    "Decision",
    "DecisionRequestInvalid",
    "EntitiesInvalid",
    "EntityRef",
    "EntitySet",
    "EvidenceState",
    "FleetState",
    "PolicyEngine",
    "PolicyError",
    "PolicySetInvalid",
    "ReleaseState",
    "SchemaInvalid",
    "TenderState",
    "TruckState",
    "authority_entity",
    "gate_context",
    "read_policy_text",
]
