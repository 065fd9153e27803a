"""The Certify check (attest.certify) on what the real agent makes on software TPMs.

The truck side is agent.tpm.TruckTpm on swtpm (fixtures from tests/support/swtpm_fixtures.py): an
AK and an identity key under the EK, TPM2_Certify over a fresh nonce, a CSR the identity key signs
in the TPM. The authority side is attest only: check_attestation_key, then verify_certify.

The agent only makes TPM-bound identity keys, so the key that is not fixedTPM is made with
tpm2-tools (under an owner primary, where fixedTPM clear forces fixedParent clear too).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.state import KeyBlob
from agent.tpm import AkAlgorithm, TruckTpm
from attest.ak import VerifiedAk, check_attestation_key
from attest.alg import Alg
from attest.attestation import AttestType, QuoteInfo, parse_tpms_attest
from attest.certify import VerifiedCertify, verify_certify
from attest.errors import (
    BadAttestSignature,
    CsrKeyMismatch,
    IdentityKeyNotFixedTpm,
    QualifyingDataMismatch,
    WrongAttestType,
)
from attest.public import ObjectAttributes, parse_tpm2b_public, parse_tpmt_public
from tests.support.swtpm import RunningTpm
from tests.unit.vectors.attest.load import certify_vector
from tests.unit.vectors.attest.regenerate import CERTIFY_VECTORS, create_ak, record_certify

pytestmark = pytest.mark.integration

TPM2_TOOLS_CERTIFY_QUALIFYING_DATA = bytes.fromhex("00ff55aa")
AK_ALGORITHMS: tuple[AkAlgorithm, ...] = ("ecc-p256", "rsa-2048")


@pytest.fixture(params=["tpm", "rsa_tpm"])
def any_tpm(request: pytest.FixtureRequest) -> RunningTpm:
    """Once with the ECC (P-384) EK as the truck's EK and once with the RSA-2048 EK."""
    running: RunningTpm = request.getfixturevalue(request.param)
    return running


@dataclass(frozen=True)
class Enrollment:
    """What a truck sends at enrollment, made by the real agent."""

    ak: KeyBlob
    identity: KeyBlob
    nonce: bytes
    attest: bytes
    signature: bytes
    csr: x509.CertificateSigningRequest


def csr_for(key: ec.EllipticCurvePrivateKey) -> x509.CertificateSigningRequest:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "truck-1")])
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())


def enroll(truck: TruckTpm, tpm: RunningTpm, algorithm: AkAlgorithm) -> Enrollment:
    kind = tpm.ek.kind
    nonce = os.urandom(32)
    ak = truck.create_attestation_key(kind, algorithm)
    identity = truck.create_identity_key(kind)
    attest, signature = truck.certify(identity, ak, nonce)
    csr = csr_for(truck.identity_signer(identity))
    return Enrollment(ak, identity, nonce, attest, signature, csr)


def verified_ak(blob: KeyBlob) -> VerifiedAk:
    return check_attestation_key(parse_tpmt_public(blob.public))


def verify(
    e: Enrollment,
    *,
    ak: KeyBlob | None = None,
    nonce: bytes | None = None,
    csr: x509.CertificateSigningRequest | None = None,
) -> VerifiedCertify:
    return verify_certify(
        e.attest,
        e.signature,
        ak=verified_ak(ak or e.ak),
        qualifying_data=e.nonce if nonce is None else nonce,
        identity=parse_tpmt_public(e.identity.public),
        csr_public_key=(csr or e.csr).public_key(),
    )


@pytest.mark.parametrize("algorithm", AK_ALGORITHMS)
def test_agent_certify_verifies(any_tpm: RunningTpm, algorithm: AkAlgorithm) -> None:
    with TruckTpm.open(any_tpm.tcti) as truck:
        e = enroll(truck, any_tpm, algorithm)
    verified = verify(e)
    assert verified.attest.type == AttestType.CERTIFY
    assert verified.attest.extra_data == e.nonce
    assert verified.certified.name == e.identity.name
    assert verified.key == e.csr.public_key()
    assert verified.signature.scheme == (Alg.ECDSA if algorithm == "ecc-p256" else Alg.RSASSA)
    assert verified.identity.has(ObjectAttributes.FIXED_TPM)


@pytest.mark.parametrize("algorithm", AK_ALGORITHMS)
def test_certify_by_another_ak_is_a_bad_signature(any_tpm: RunningTpm, algorithm: AkAlgorithm) -> None:
    with TruckTpm.open(any_tpm.tcti) as truck:
        first = truck.create_attestation_key(any_tpm.ek.kind, algorithm)
        e = enroll(truck, any_tpm, algorithm)  # certified by a second AK of the same kind
    verify(e)
    with pytest.raises(BadAttestSignature):
        verify(e, ak=first)


@pytest.mark.parametrize("algorithm", AK_ALGORITHMS)
def test_certify_with_another_nonce_is_refused(any_tpm: RunningTpm, algorithm: AkAlgorithm) -> None:
    with TruckTpm.open(any_tpm.tcti) as truck:
        e = enroll(truck, any_tpm, algorithm)
    with pytest.raises(QualifyingDataMismatch):
        verify(e, nonce=os.urandom(32))


@pytest.mark.parametrize("algorithm", AK_ALGORITHMS)
def test_csr_signed_by_a_software_key_is_refused(any_tpm: RunningTpm, algorithm: AkAlgorithm) -> None:
    with TruckTpm.open(any_tpm.tcti) as truck:
        e = enroll(truck, any_tpm, algorithm)
    software = csr_for(ec.generate_private_key(ec.SECP256R1()))
    assert software.is_signature_valid
    with pytest.raises(CsrKeyMismatch):
        verify(e, csr=software)


def test_csr_of_another_tpm_identity_key_is_refused(tpm: RunningTpm) -> None:
    with TruckTpm.open(tpm.tcti) as truck:
        e = enroll(truck, tpm, "ecc-p256")
        other = csr_for(truck.identity_signer(truck.create_identity_key(tpm.ek.kind)))
    with pytest.raises(CsrKeyMismatch):
        verify(e, csr=other)


# -- tpm2-tools: what the agent cannot make ----------------------------------------------------


def flush(tpm: RunningTpm) -> None:
    tpm.tool("tpm2_flushcontext", "-t")


def test_certify_of_a_key_that_is_not_fixed_tpm(tpm: RunningTpm, tmp_path: Path) -> None:
    ak = create_ak(tpm, "ecc", "ecc", tmp_path)
    primary, pub, priv, key = (tmp_path / n for n in ("primary.ctx", "key.pub", "key.priv", "key.ctx"))
    tpm.tool("tpm2_createprimary", "-C", "o", "-g", "sha256", "-G", "ecc256", "-c", primary)
    flush(tpm)
    tpm.tool(
        "tpm2_create",
        "-C",
        primary,
        "-g",
        "sha256",
        "-G",
        "ecc256:ecdsa-sha256",
        "-a",
        "sensitivedataorigin|userwithauth|sign",
        "-u",
        pub,
        "-r",
        priv,
    )
    flush(tpm)
    tpm.tool("tpm2_load", "-C", primary, "-u", pub, "-r", priv, "-c", key)
    flush(tpm)
    identity = parse_tpm2b_public(pub.read_bytes())
    assert not identity.has(ObjectAttributes.FIXED_TPM)
    # tpm2_certify (tpm2-tools 5.x) takes no qualifying data; it always passes 00ff55aa.
    attest, signature = tmp_path / "attest.out", tmp_path / "sig.out"
    tpm.tool("tpm2_certify", "-c", key, "-C", ak.context, "-g", "sha256", "-o", attest, "-s", signature)
    flush(tpm)
    with pytest.raises(IdentityKeyNotFixedTpm):
        verify_certify(
            attest.read_bytes(),
            signature.read_bytes(),
            ak=check_attestation_key(parse_tpm2b_public(ak.public)),
            qualifying_data=TPM2_TOOLS_CERTIFY_QUALIFYING_DATA,
            identity=identity,
            csr_public_key=identity.public_key(),
        )


def test_a_real_quote_parses_and_is_the_wrong_type_for_certify(tpm: RunningTpm, tmp_path: Path) -> None:
    ak = create_ak(tpm, "ecc", "ecc", tmp_path)
    nonce = os.urandom(32)
    message, signature = tmp_path / "quote.msg", tmp_path / "quote.sig"
    tpm.tool(
        "tpm2_quote",
        "-c",
        ak.context,
        "-l",
        "sha256:0,7",
        "-q",
        nonce.hex(),
        "-g",
        "sha256",
        "-m",
        message,
        "-s",
        signature,
    )
    flush(tpm)
    quote = parse_tpms_attest(message.read_bytes())
    assert quote.type == AttestType.QUOTE
    assert quote.extra_data == nonce
    assert isinstance(quote.attested, QuoteInfo)
    assert [(b.hash_alg, b.pcrs()) for b in quote.attested.pcr_select] == [(Alg.SHA256, (0, 7))]
    assert len(quote.attested.pcr_digest) == 32
    with pytest.raises(WrongAttestType):
        verify_certify(
            message.read_bytes(),
            signature.read_bytes(),
            ak=check_attestation_key(parse_tpm2b_public(ak.public)),
            qualifying_data=nonce,
            identity=parse_tpm2b_public(ak.public),
            csr_public_key=parse_tpm2b_public(ak.public).public_key(),
        )


# -- the recorded vectors ------------------------------------------------------------------------


@pytest.mark.parametrize("file_name", sorted(CERTIFY_VECTORS))
def test_recorded_certify_vectors_have_the_shape_the_agent_makes(tpm: RunningTpm, file_name: str) -> None:
    """Regenerating a certify vector now gives the same fields, sizes, key shapes and attest type."""
    fresh = {k: bytes.fromhex(v) for k, v in record_certify(tpm, "ecc", CERTIFY_VECTORS[file_name]).items()}
    recorded = certify_vector(file_name.removeprefix("certify-").removesuffix(".json"))
    assert fresh.keys() == recorded.keys()
    for name in ("nonce", "attest", "ak_public", "identity_public"):
        assert len(fresh[name]) == len(recorded[name]), name
    for name in ("ak_public", "identity_public"):
        old, new = parse_tpmt_public(recorded[name]), parse_tpmt_public(fresh[name])
        assert (old.type, old.name_alg, old.attributes, old.parameters) == (
            new.type,
            new.name_alg,
            new.attributes,
            new.parameters,
        ), name
    assert parse_tpms_attest(fresh["attest"]).type == parse_tpms_attest(recorded["attest"]).type
    assert fresh["attest"][:6] == recorded["attest"][:6]
