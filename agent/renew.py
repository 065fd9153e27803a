"""The truck renews its identity certificate: attest (purpose renew), then a CSR by the same TPM-resident
identity key; the new certificate is checked like an enrollment's before the state is updated."""

from __future__ import annotations

from pathlib import Path

from agent.attest import attest
from agent.client import EnrollmentClient
from agent.enroll import identity_csr, verify_issued
from agent.state import AgentState
from agent.tpm import TruckTpm


def renew(
    tpm: TruckTpm, client: EnrollmentClient, state: AgentState, state_dir: Path, *, event_log: bytes
) -> AgentState:
    truck = state.truck
    attest(tpm, client, state, event_log=event_log, purpose="renew")
    renewed = client.renew(truck, identity_csr(tpm, state, truck))
    verify_issued(
        renewed.certificate_pem,
        renewed.chain_pem,
        identity_public=state.identity.public,
        spiffe_id=renewed.spiffe_id,
    )
    updated = state.with_certificate((renewed.certificate_pem + renewed.chain_pem).encode())
    updated.save(state_dir)
    return updated
