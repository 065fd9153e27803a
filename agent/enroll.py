"""The truck's side of enrollment (DESIGN.md flow 3), from a fresh TPM key pair to a saved identity.

1. read the EK certificate and public area; make an AK and an identity key under the EK;
2. start: send token, EK and AK; receive the credential challenge and the Certify nonce;
3. TPM2_ActivateCredential (only the TPM holding that EK, with that AK, recovers the secret);
4. TPM2_Certify of the identity key by the AK over the nonce; a CSR signed in the TPM by the identity key;
   where the challenge asks for a first quote: TPM2_Quote by the AK over its quote nonce of the PCRs it
   names, their values, and the measured-boot event log of this boot (the truck must have booted);
5. activate: receive the certificate and its chain;
6. check that the certificate is for the identity key, names the SPIFFE ID the server reported, and
   chains by signature through the returned chain;
7. only then write the state directory, whole: it is assembled beside the target and renamed into place.

The agent has no pinned trust anchor of its own at this point (TLS to the server is its trust), so
step 6 guards against a confused or mixed-up answer, not against a server that lies consistently.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import get_args

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from agent.client import BadServerResponse, EnrollmentClient, EnrollmentError, FirstQuote
from agent.state import AgentState, EkKind
from agent.tpm import AkAlgorithm, PcrBank, TruckTpm, public_key


class StateDirInUse(EnrollmentError):
    """The state directory already holds something; enrolling must not overwrite a truck's keys."""


class IssuedCertificateRejected(EnrollmentError):
    """The server's certificate is not for the identity key, or does not chain to the chain it sent."""


class NotBooted(EnrollmentError):
    """The authority asks for a first quote and the agent has no event log of this boot to send."""


class StateNotInstalled(EnrollmentError):
    """Enrolled, but the state could not be moved into place; `kept` holds it: the only copy, keep it."""

    def __init__(self, message: str, kept: Path) -> None:
        super().__init__(message)
        self.kept = kept


_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _check_state_dir(state_dir: Path) -> None:
    if state_dir.exists() and (not state_dir.is_dir() or any(state_dir.iterdir())):
        raise StateDirInUse(f"{state_dir} exists and is not an empty directory; move it away to re-enroll")


def identity_csr(tpm: TruckTpm, state: AgentState, truck: str) -> str:
    # The server writes the names itself (SPIFFE ID); the CN only helps a human reading the CSR.
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, truck)] if truck else [])
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    csr = builder.sign(tpm.identity_signer(state.identity), hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def verify_issued(certificate_pem: str, chain_pem: str, *, identity_public: bytes, spiffe_id: str) -> None:
    """Raise IssuedCertificateRejected unless the leaf is the identity key's, names `spiffe_id`, and each
    certificate is signed by the next one in the chain (issuing CA, then root, self-signed)."""
    try:
        leaves = x509.load_pem_x509_certificates(certificate_pem.encode())
        chain = x509.load_pem_x509_certificates(chain_pem.encode())
    except ValueError as exc:
        raise IssuedCertificateRejected(f"the returned certificates are not PEM: {exc}") from None
    if len(leaves) != 1 or not chain:
        raise IssuedCertificateRejected(
            f"expected one certificate and a chain, got {len(leaves)} and {len(chain)}"
        )
    leaf = leaves[0]
    if leaf.public_key().public_bytes(*_SPKI) != public_key(identity_public).public_bytes(*_SPKI):
        raise IssuedCertificateRejected("the certificate's public key is not the TPM identity key")
    try:
        uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier
        )
    except x509.ExtensionNotFound:
        uris = []
    if spiffe_id not in uris:
        raise IssuedCertificateRejected(f"the certificate does not name {spiffe_id} (URI SANs: {uris})")
    links = [*zip([leaf, *chain[:-1]], chain, strict=True), (chain[-1], chain[-1])]
    for child, issuer in links:
        try:
            child.verify_directly_issued_by(issuer)
        except InvalidSignature:
            raise IssuedCertificateRejected(
                f"{child.subject.rfc4514_string()} is not signed by {issuer.subject.rfc4514_string()}"
            ) from None
        except (ValueError, TypeError) as exc:
            # ValueError: the issuer name differs or the signature algorithm is unsupported.
            raise IssuedCertificateRejected(f"{child.subject.rfc4514_string()}: {exc}") from None


def _install(state: AgentState, state_dir: Path) -> None:
    """Write the whole state beside `state_dir`, then rename it into place (one atomic step)."""
    parent = state_dir.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{state_dir.name}.", dir=parent))
    try:
        state.save(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        # rename(2) replaces an empty directory and fails on a non-empty one: never overwrites keys.
        os.rename(staging, state_dir)
    except OSError as exc:
        raise StateNotInstalled(
            f"enrolled, but could not move the state into {state_dir} ({exc}); it is kept in {staging}",
            staging,
        ) from exc
    fd = os.open(parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def enroll(
    tpm: TruckTpm,
    client: EnrollmentClient,
    token: str,
    *,
    ek_kind: EkKind,
    truck: str | None,
    ek_intermediates: list[bytes],
    state_dir: Path,
    ak_algorithm: AkAlgorithm = "ecc-p256",
    event_log: bytes | None = None,
) -> AgentState:
    """Enroll this TPM with the authority and save the resulting state in `state_dir` (which must not exist
    or be empty). `event_log` is the measured-boot log of the boot the TPM's PCRs hold, for the first quote.
    Raises EnrollmentRefused (the server said no), IssuedCertificateRejected (its answer does not hold
    up), NotBooted, another EnrollmentError, or a TPM error (TpmError, TSS2_Exception)."""
    _check_state_dir(state_dir)

    # 1. EK and fresh keys; the TPM is asked first so a TPM fault costs no enrollment token.
    ek_certificate = tpm.ek_certificate(ek_kind)
    ek_public = tpm.ek_public(ek_kind)
    state = AgentState(
        ek_kind=ek_kind,
        ak=tpm.create_attestation_key(ek_kind, ak_algorithm),
        identity=tpm.create_identity_key(ek_kind),
    )

    # 2. Start.
    challenge = client.start(
        token,
        ek_certificate=ek_certificate,
        ek_public=ek_public,
        ak_public=state.ak.public,
        truck=truck,
        ek_intermediates=ek_intermediates,
    )
    if truck is not None and challenge.truck != truck:
        raise BadServerResponse(f"the challenge is for truck {challenge.truck!r}, not {truck!r}")

    # 3-4. Prove the EK and AK, certify the identity key over the nonce, sign the CSR in the TPM.
    secret = tpm.activate_credential(state.ak, ek_kind, challenge.credential_blob, challenge.encrypted_secret)
    certify_info, certify_signature = tpm.certify(state.identity, state.ak, challenge.certify_nonce)
    csr = identity_csr(tpm, state, challenge.truck)
    first_quote = None
    if challenge.quote_nonce is not None:
        if event_log is None:
            raise NotBooted("the authority asks for a first quote; boot (measured) and give its event log")
        bank = next((b for b in get_args(PcrBank) if b == challenge.quote_bank), None)
        if bank is None:
            raise BadServerResponse(f"the authority asks for PCR bank {challenge.quote_bank!r}")
        quote_info, quote_signature = tpm.quote(state.ak, challenge.quote_nonce, bank, challenge.quote_pcrs)
        first_quote = FirstQuote(
            quote_info, quote_signature, tpm.pcr_read(bank, challenge.quote_pcrs), event_log
        )

    # 5. Activate.
    enrolled = client.activate(
        challenge.enrollment_id,
        secret=secret,
        identity_public=state.identity.public,
        certify_info=certify_info,
        certify_signature=certify_signature,
        csr_pem=csr,
        first_quote=first_quote,
    )

    # 6. Check the answer before keeping anything.
    verify_issued(
        enrolled.certificate_pem,
        enrolled.chain_pem,
        identity_public=state.identity.public,
        spiffe_id=enrolled.spiffe_id,
    )

    # 7. Save, whole.
    certificate_pem = enrolled.certificate_pem.rstrip("\n") + "\n" + enrolled.chain_pem.rstrip("\n") + "\n"
    state = state.with_certificate(certificate_pem.encode("ascii"))
    _install(state, state_dir)
    return state
