"""The truck's evidence-signing certificate: the Sigstore profile of its TPM identity key.

`request` signs a CSR with the identity key in the TPM, asks the authority for the certificate, checks it
(over the identity key, for the SPIFFE ID of the identity certificate, codeSigning, chained to the CA
certificates sent with it) and keeps it in the state dir. `current` is what `agent submit` sends along
with a statement: the kept certificate if it is for the identity key and in date, else nothing (the
statement is then logged without a Sigstore bundle rather than refused).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from agent.client import BadServerResponse, EnrollmentClient
from agent.enroll import identity_csr, verify_issued
from agent.state import (
    EVIDENCE_CERTIFICATE_FILE,
    AgentState,
    StateError,
    load_evidence_certificate,
    save_evidence_certificate,
)
from agent.tpm import TruckTpm

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
# Not sent when it expires sooner than this: the server stamps the signature at submission.
EXPIRY_MARGIN = timedelta(seconds=5)


def _spiffe_id(certificate: x509.Certificate) -> str:
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ""
    uris = names.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if len(uris) == 1 else ""


def _identity(state: AgentState) -> x509.Certificate:
    if state.certificate_pem is None:
        raise StateError("not enrolled: no identity certificate in the state")
    return x509.load_pem_x509_certificate(state.certificate_pem)


def request(
    tpm: TruckTpm,
    client: EnrollmentClient,
    state: AgentState,
    state_dir: Path,
    *,
    ttl_seconds: int | None = None,
) -> dict[str, Any]:
    """Ask for, check and keep an evidence-signing certificate; a summary for the command line.
    `client` must sign its truck calls (agent.request_auth.as_truck): the authority refuses unsigned ones."""
    truck = state.truck
    spiffe_id = _spiffe_id(_identity(state))
    answer = client.evidence_certificate(truck, identity_csr(tpm, state, truck), ttl_seconds=ttl_seconds)
    certificate_pem, chain_pem = answer.get("certificate_pem"), answer.get("chain_pem")
    if not isinstance(certificate_pem, str) or not isinstance(chain_pem, str):
        raise BadServerResponse("the answer carries no certificate_pem and chain_pem")
    verify_issued(certificate_pem, chain_pem, identity_public=state.identity.public, spiffe_id=spiffe_id)
    leaf = x509.load_pem_x509_certificate(certificate_pem.encode())
    try:
        usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usage = x509.ExtendedKeyUsage([])
    if list(usage) != [ExtendedKeyUsageOID.CODE_SIGNING]:
        raise BadServerResponse("the evidence certificate is not for code signing only")
    save_evidence_certificate(state_dir, (certificate_pem + chain_pem).encode())
    return {
        "truck": truck,
        "spiffe_id": spiffe_id,
        "serial": format(leaf.serial_number, "x"),
        "not_before": f"{leaf.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}",
        "not_after": f"{leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}",
        "certificate": str(state_dir / EVIDENCE_CERTIFICATE_FILE),
    }


def current(state: AgentState, state_dir: Path, now: datetime) -> str | None:
    """The kept evidence certificate (PEM, leaf first) if it is for the identity key and in date."""
    kept = load_evidence_certificate(state_dir)
    if kept is None:
        return None
    try:
        leaf = x509.load_pem_x509_certificates(kept)[0]
    except (ValueError, IndexError) as exc:
        raise StateError(f"{EVIDENCE_CERTIFICATE_FILE} is not PEM: {exc}") from None
    identity = _identity(state)
    if leaf.public_key().public_bytes(*_SPKI) != identity.public_key().public_bytes(*_SPKI):
        return None  # left from an earlier enrollment
    if not leaf.not_valid_before_utc <= now < leaf.not_valid_after_utc - EXPIRY_MARGIN:
        return None
    return kept.decode("ascii")
