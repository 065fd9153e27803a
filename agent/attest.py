"""The truck's side of an attestation: ask for a nonce, quote the PCRs the authority selected with the
enrolled AK, read their values, send quote, PCR values and the measured-boot event log."""

from __future__ import annotations

from typing import get_args

from agent.client import AttestationResult, BadServerResponse, EnrollmentClient
from agent.state import AgentState
from agent.tpm import PcrBank, TruckTpm
from attest.binding import expected_extra_data


def attest(
    tpm: TruckTpm,
    client: EnrollmentClient,
    state: AgentState,
    *,
    event_log: bytes,
    purpose: str = "attest",
    tender: str | None = None,
) -> AttestationResult:
    truck = state.truck
    # The identity key signs both requests (when the client signs its truck calls with this TPM) and
    # the AK quotes once: loaded once each for the call, and flushed when it ends.
    with tpm.holding(state.identity, state.ak):
        nonce = client.attestation_nonce(truck, purpose=purpose, tender=tender)
        # The agent signs only what it can account for: the nonce, or its binding to the tender it
        # asked about.
        if nonce.truck != truck or nonce.extra_data != expected_extra_data(nonce.nonce, tender, truck):
            raise BadServerResponse("the nonce is not bound to this truck and tender")
        bank = next((b for b in get_args(PcrBank) if b == nonce.bank), None)
        if bank is None:
            raise BadServerResponse(f"the authority asks for PCR bank {nonce.bank!r}")
        quote_info, signature = tpm.quote(state.ak, nonce.extra_data, bank, nonce.pcrs)
        values = tpm.pcr_read(bank, nonce.pcrs)
        return client.attest(
            truck,
            nonce.id,
            quote_info=quote_info,
            signature=signature,
            pcr_values=values,
            event_log=event_log,
        )
