"""The enrollment handshake end to end, without HTTP: the truck's agent on a real swtpm, the authority's
pure checks in attest/. EK certificate to the pinned manufacturer root, EK public = certificate key, AK
checked and named by the authority, MakeCredential sealed to the EK for that name, ActivateCredential on
the TPM, secret compared in constant time, and the identity key's Certify over the authority's nonce
matching the key that signed the CSR. Negatives: a rogue manufacturer, a secret that does not match,
and a credential bound to a name other than the AK's."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from tpm2_pytss.TSS2_Exception import TSS2_Exception

from agent.state import EkKind
from agent.tpm import TruckTpm
from attest.ak import check_attestation_key
from attest.certify import verify_certify
from attest.credential import make_credential, secrets_match
from attest.ek import check_ek_matches, verify_ek_certificate
from attest.errors import ActivationSecretMismatch, EkChainUntrusted
from attest.public import parse_tpmt_public
from tests.support.swtpm import ManufacturerCa, RunningTpm

pytestmark = pytest.mark.integration


def trust(ca: ManufacturerCa) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
    """(intermediates, roots) as an authority configures them for one manufacturer."""
    return (
        x509.load_pem_x509_certificates(ca.intermediate_pem.read_bytes()),
        x509.load_pem_x509_certificates(ca.root_pem.read_bytes()),
    )


@pytest.mark.parametrize(("fixture", "kind"), [("tpm", "ecc"), ("rsa_tpm", "rsa")])
def test_enrollment_ceremony(
    request: pytest.FixtureRequest, manufacturer: ManufacturerCa, fixture: str, kind: EkKind
) -> None:
    running: RunningTpm = request.getfixturevalue(fixture)
    intermediates, roots = trust(manufacturer)
    with TruckTpm.open(running.tcti) as truck:
        # Truck → authority: EK certificate, EK public, AK public.
        ek_cert, ek_public = truck.ek_certificate(kind), parse_tpmt_public(truck.ek_public(kind))
        ak = truck.create_attestation_key(kind)

        # Authority: EK chain, EK key, AK attributes; the AK name is computed here, not taken from the truck.
        verified_ek = verify_ek_certificate(
            ek_cert, intermediates=intermediates, roots=roots, now=datetime.now(UTC)
        )
        check_ek_matches(verified_ek, ek_public)
        verified_ak = check_attestation_key(parse_tpmt_public(ak.public))
        secret = os.urandom(32)
        challenge = make_credential(ek_public, verified_ak.name, secret)

        # Truck: only the TPM holding that EK, with an AK of that name loaded, recovers the secret.
        recovered = truck.activate_credential(ak, kind, challenge.credential_blob, challenge.encrypted_secret)
        secrets_match(secret, recovered)
        with pytest.raises(ActivationSecretMismatch):
            secrets_match(secret, bytes(32))

        # Identity key: certified by the AK over the authority's nonce, and the key that signed the CSR.
        identity = truck.create_identity_key(kind)
        nonce = os.urandom(32)
        statement, signature = truck.certify(identity, ak, nonce)
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t-001")]))
            .sign(truck.identity_signer(identity), hashes.SHA256())
        )
        assert csr.is_signature_valid
        certified = verify_certify(
            statement,
            signature,
            ak=verified_ak,
            qualifying_data=nonce,
            identity=parse_tpmt_public(identity.public),
            csr_public_key=csr.public_key(),
        )
        assert certified.identity.name() == parse_tpmt_public(identity.public).name()

        # A credential bound to another object's name (say, a software key the truck claims is its AK).
        other = truck.create_attestation_key(kind)
        forged = make_credential(ek_public, parse_tpmt_public(other.public).name(), secret)
        with pytest.raises(TSS2_Exception):
            truck.activate_credential(ak, kind, forged.credential_blob, forged.encrypted_secret)


def test_rogue_manufacturer_is_refused(rogue_tpm: RunningTpm, manufacturer: ManufacturerCa) -> None:
    intermediates, roots = trust(manufacturer)
    with TruckTpm.open(rogue_tpm.tcti) as truck:
        ek_cert = truck.ek_certificate("ecc")
    with pytest.raises(EkChainUntrusted):
        verify_ek_certificate(ek_cert, intermediates=intermediates, roots=roots, now=datetime.now(UTC))
