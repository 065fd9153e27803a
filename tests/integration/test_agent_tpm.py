"""The truck-side TPM client (agent.tpm) against real software TPMs.

Every test runs on a fresh swtpm (fixtures from tests/support/swtpm_fixtures.py) and ends by
checking that the agent left no transient object or session loaded: swtpm has no resource
manager. Missing tpm2-pytss is an import error and missing swtpm a fixture error: both fail.

"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import tpm2_pytss.constants as _c
import tpm2_pytss.types as _t
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.x509.oid import NameOID
from tpm2_pytss.TSS2_Exception import TSS2_Exception

from agent.signer import TpmKeyError
from agent.state import AgentState, KeyBlob, StateError, tpm_name
from agent.tpm import AkAlgorithm, TpmError, TruckTpm, public_key
from tests.support.swtpm import EK_PROFILES, Kind, RunningTpm

pytestmark = pytest.mark.integration


TPM_GENERATED_VALUE = 0xFF544347
TPM_ST_ATTEST_CERTIFY = 0x8017
MAKECREDENTIAL_HEADER = bytes.fromhex("badcc0de00000001")  # tpm2-tools file magic + version 1


@pytest.fixture(params=["tpm", "rsa_tpm"])
def any_tpm(request: pytest.FixtureRequest) -> RunningTpm:
    """Runs once with the ECC (P-384) EK as the truck's EK and once with the RSA-2048 EK."""
    running: RunningTpm = request.getfixturevalue(request.param)
    return running


def assert_nothing_loaded(tpm: RunningTpm) -> None:
    assert tpm.tool("tpm2_getcap", "handles-transient").strip() == b""
    assert tpm.tool("tpm2_getcap", "handles-loaded-session").strip() == b""


def attributes(public: bytes) -> Any:
    area, consumed = _t.TPMT_PUBLIC.unmarshal(public)
    assert consumed == len(public)
    return area


def flags(area: Any) -> set[str]:
    names = (
        "FIXEDTPM",
        "STCLEAR",
        "FIXEDPARENT",
        "SENSITIVEDATAORIGIN",
        "USERWITHAUTH",
        "ADMINWITHPOLICY",
        "NODA",
        "ENCRYPTEDDUPLICATION",
        "RESTRICTED",
        "DECRYPT",
        "SIGN_ENCRYPT",
    )
    value = int(area.objectAttributes)
    return {name for name in names if value & int(getattr(_c.TPMA_OBJECT, name))}


def verify_tpm_signature(public: bytes, message: bytes, signature: bytes) -> None:
    """Check a marshalled TPMT_SIGNATURE over SHA-256(message) with the key of a TPMT_PUBLIC."""
    sig, consumed = _t.TPMT_SIGNATURE.unmarshal(signature)
    assert consumed == len(signature)
    key = public_key(public)
    if isinstance(key, ec.EllipticCurvePublicKey):
        assert sig.sigAlg == _c.TPM2_ALG.ECDSA
        assert sig.signature.ecdsa.hash == _c.TPM2_ALG.SHA256
        r = int.from_bytes(bytes(sig.signature.ecdsa.signatureR), "big")
        s = int.from_bytes(bytes(sig.signature.ecdsa.signatureS), "big")
        key.verify(utils.encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
    else:
        assert isinstance(key, rsa.RSAPublicKey)
        assert sig.sigAlg == _c.TPM2_ALG.RSASSA
        assert sig.signature.rsassa.hash == _c.TPM2_ALG.SHA256
        key.verify(bytes(sig.signature.rsassa.sig), message, padding.PKCS1v15(), hashes.SHA256())


def make_credential(
    tpm: RunningTpm, tmp_path: Path, ek_public: bytes, name: bytes, secret: bytes
) -> tuple[bytes, bytes]:
    """tpm2_makecredential offline (-T none): (TPM2B_ID_OBJECT contents, TPM2B_ENCRYPTED_SECRET contents)."""
    ek_pub = tmp_path / "ek.pub"
    ek_pub.write_bytes(len(ek_public).to_bytes(2, "big") + ek_public)  # TPM2B_PUBLIC, tpm2-tools' format
    (tmp_path / "secret.bin").write_bytes(secret)
    out = tmp_path / "cred.out"
    tpm.tool(
        "tpm2_makecredential",
        "-T",
        "none",
        "-u",
        ek_pub,
        "-s",
        tmp_path / "secret.bin",
        "-n",
        name.hex(),
        "-o",
        out,
    )
    data = out.read_bytes()
    assert data[:8] == MAKECREDENTIAL_HEADER
    blob_size = int.from_bytes(data[8:10], "big")
    blob = data[10 : 10 + blob_size]
    rest = data[10 + blob_size :]
    secret_size = int.from_bytes(rest[:2], "big")
    assert len(rest) == 2 + secret_size
    return blob, rest[2:]


# -- EK --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ecc", "rsa"])
def test_ek_certificate_is_the_nv_index_and_certifies_the_ek(tpm: RunningTpm, kind: Kind) -> None:
    with TruckTpm.open(tpm.tcti) as truck:
        der = truck.ek_certificate(kind)
        ek_public = truck.ek_public(kind)
    assert der == tpm.read_nv(EK_PROFILES[kind].cert_nv_index)
    assert der == tpm.state.ek_cert_der(kind)
    certificate = x509.load_der_x509_certificate(der)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert certificate.public_key().public_bytes(*spki) == public_key(ek_public).public_bytes(*spki)
    area = attributes(ek_public)
    assert {"RESTRICTED", "DECRYPT", "FIXEDTPM"} <= flags(area)
    assert_nothing_loaded(tpm)


# -- keys ------------------------------------------------------------------------------------------

AK_FLAGS = {"FIXEDTPM", "FIXEDPARENT", "SENSITIVEDATAORIGIN", "USERWITHAUTH", "RESTRICTED", "SIGN_ENCRYPT"}


@pytest.mark.parametrize("algorithm", ["ecc-p256", "rsa-2048"])
def test_attestation_key_has_exactly_the_ak_attributes(any_tpm: RunningTpm, algorithm: AkAlgorithm) -> None:
    with TruckTpm.open(any_tpm.tcti) as truck:
        ak = truck.create_attestation_key(any_tpm.ek.kind, algorithm)
    area = attributes(ak.public)
    assert flags(area) == AK_FLAGS
    assert area.nameAlg == _c.TPM2_ALG.SHA256
    assert bytes(area.authPolicy) == b""
    if algorithm == "ecc-p256":
        assert area.type == _c.TPM2_ALG.ECC
        assert area.parameters.eccDetail.curveID == _c.TPM2_ECC.NIST_P256
        assert area.parameters.eccDetail.scheme.scheme == _c.TPM2_ALG.ECDSA
        assert area.parameters.eccDetail.scheme.details.ecdsa.hashAlg == _c.TPM2_ALG.SHA256
    else:
        assert area.type == _c.TPM2_ALG.RSA
        assert area.parameters.rsaDetail.keyBits == 2048
        assert area.parameters.rsaDetail.scheme.scheme == _c.TPM2_ALG.RSASSA
        assert area.parameters.rsaDetail.scheme.details.rsassa.hashAlg == _c.TPM2_ALG.SHA256
    assert ak.name == (0x000B).to_bytes(2, "big") + hashlib.sha256(ak.public).digest()
    assert ak.name == tpm_name(ak.public)
    assert ak.parent == any_tpm.ek.kind
    assert_nothing_loaded(any_tpm)


def test_identity_key_is_an_unrestricted_p256_signing_key(tpm: RunningTpm) -> None:
    with TruckTpm.open(tpm.tcti) as truck:
        identity = truck.create_identity_key("ecc")
    area = attributes(identity.public)
    assert flags(area) == AK_FLAGS - {"RESTRICTED"}
    assert area.parameters.eccDetail.curveID == _c.TPM2_ECC.NIST_P256
    assert identity.name == tpm_name(identity.public)
    assert_nothing_loaded(tpm)


# -- identity signer -------------------------------------------------------------------------------


def test_csr_signed_in_the_tpm_verifies_and_carries_the_identity_key(any_tpm: RunningTpm) -> None:
    with TruckTpm.open(any_tpm.tcti) as truck:
        identity = truck.create_identity_key(any_tpm.ek.kind)
        signer = truck.identity_signer(identity)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "truck-1")])
        csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(signer, hashes.SHA256())
    assert csr.is_signature_valid
    assert csr.public_key() == public_key(identity.public)
    assert signer.public_key() == csr.public_key()
    assert_nothing_loaded(any_tpm)


def test_identity_signer_refuses_export_ecdh_and_other_hashes(tpm: RunningTpm) -> None:
    with TruckTpm.open(tpm.tcti) as truck:
        signer = truck.identity_signer(truck.create_identity_key("ecc"))
        signature = signer.sign(b"manifest", ec.ECDSA(hashes.SHA256()))
        signer.public_key().verify(signature, b"manifest", ec.ECDSA(hashes.SHA256()))
        with pytest.raises(TpmKeyError):
            signer.private_numbers()
        with pytest.raises(TpmKeyError):
            signer.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        with pytest.raises(TpmKeyError):
            signer.exchange(ec.ECDH(), ec.generate_private_key(ec.SECP256R1()).public_key())
        with pytest.raises(TpmKeyError):
            signer.sign(b"manifest", ec.ECDSA(hashes.SHA384()))
    assert_nothing_loaded(tpm)


# -- certify ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["ecc-p256", "rsa-2048"])
def test_certify_is_a_signed_certify_statement_about_the_identity_key(
    any_tpm: RunningTpm, algorithm: AkAlgorithm
) -> None:
    kind = any_tpm.ek.kind
    nonce = os.urandom(32)
    with TruckTpm.open(any_tpm.tcti) as truck:
        ak = truck.create_attestation_key(kind, algorithm)
        identity = truck.create_identity_key(kind)
        attest, signature = truck.certify(identity, ak, nonce)
    parsed, consumed = _t.TPMS_ATTEST.unmarshal(attest)
    assert consumed == len(attest)
    assert int.from_bytes(attest[:4], "big") == TPM_GENERATED_VALUE == parsed.magic
    assert int.from_bytes(attest[4:6], "big") == TPM_ST_ATTEST_CERTIFY == parsed.type
    assert bytes(parsed.extraData) == nonce
    assert bytes(parsed.attested.certify.name) == identity.name
    assert bytes(parsed.qualifiedSigner)[:2] == (0x000B).to_bytes(2, "big")
    verify_tpm_signature(ak.public, attest, signature)
    assert_nothing_loaded(any_tpm)


def test_certify_signature_does_not_verify_over_other_bytes(tpm: RunningTpm) -> None:
    with TruckTpm.open(tpm.tcti) as truck:
        ak = truck.create_attestation_key("ecc")
        attest, signature = truck.certify(truck.create_identity_key("ecc"), ak, b"n")
    with pytest.raises(InvalidSignature):
        verify_tpm_signature(ak.public, attest[:-1] + bytes([attest[-1] ^ 1]), signature)
    assert_nothing_loaded(tpm)


# -- state -----------------------------------------------------------------------------------------


def test_state_round_trips_and_a_reloaded_ak_still_certifies(tpm: RunningTpm, tmp_path: Path) -> None:
    directory = tmp_path / "agent"
    with TruckTpm.open(tpm.tcti) as truck:
        state = AgentState(
            ek_kind="ecc", ak=truck.create_attestation_key("ecc"), identity=truck.create_identity_key("ecc")
        )
    state.save(directory)
    state.with_certificate(b"-----BEGIN CERTIFICATE-----\n").save(directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    loaded = AgentState.load(directory)
    assert loaded == state.with_certificate(b"-----BEGIN CERTIFICATE-----\n")

    with TruckTpm.open(tpm.tcti) as truck:  # a new connection, as after a reboot of the agent
        attest, signature = truck.certify(loaded.identity, loaded.ak, b"again")
    verify_tpm_signature(loaded.ak.public, attest, signature)
    assert_nothing_loaded(tpm)


def test_state_with_a_swapped_public_blob_is_refused(tpm: RunningTpm, tmp_path: Path) -> None:
    with TruckTpm.open(tpm.tcti) as truck:
        ak = truck.create_attestation_key("ecc")
        identity = truck.create_identity_key("ecc")
    AgentState(ek_kind="ecc", ak=ak, identity=identity).save(tmp_path)
    (tmp_path / "ak.pub").write_bytes(identity.public)
    with pytest.raises(StateError, match=r"ak\.pub"):
        AgentState.load(tmp_path)


def test_a_blob_whose_name_lies_is_refused_at_load(tpm: RunningTpm) -> None:
    with TruckTpm.open(tpm.tcti) as truck:
        ak = truck.create_attestation_key("ecc")
        identity = truck.create_identity_key("ecc")
        lying = KeyBlob(public=ak.public, private=ak.private, name=identity.name, parent="ecc")
        with pytest.raises(TpmError):
            truck.certify(identity, lying, b"n")
    assert_nothing_loaded(tpm)


# -- credential activation -------------------------------------------------------------------------


def test_activate_credential_recovers_the_secret_made_offline(any_tpm: RunningTpm, tmp_path: Path) -> None:
    kind = any_tpm.ek.kind
    secret = os.urandom(32)
    with TruckTpm.open(any_tpm.tcti) as truck:
        ak = truck.create_attestation_key(kind)
        blob, encrypted = make_credential(any_tpm, tmp_path, truck.ek_public(kind), ak.name, secret)
        assert truck.activate_credential(ak, kind, blob, encrypted) == secret
    assert_nothing_loaded(any_tpm)


def test_activate_credential_fails_for_another_aks_name(any_tpm: RunningTpm, tmp_path: Path) -> None:
    kind = any_tpm.ek.kind
    with TruckTpm.open(any_tpm.tcti) as truck:
        ak = truck.create_attestation_key(kind)
        other = truck.create_attestation_key(kind)
        blob, encrypted = make_credential(
            any_tpm, tmp_path, truck.ek_public(kind), other.name, os.urandom(32)
        )
        with pytest.raises(TSS2_Exception):
            truck.activate_credential(ak, kind, blob, encrypted)
    assert_nothing_loaded(any_tpm)


def test_held_keys_are_loaded_once_and_flushed_when_the_block_ends(tpm: RunningTpm) -> None:
    """Inside `holding`, operations use the held objects (no further transient objects appear); nested
    blocks leave the flush to the outer one; all are gone after it, also when the block raises."""
    with TruckTpm.open(tpm.tcti) as truck:
        ak = truck.create_attestation_key("ecc")
        identity = truck.create_identity_key("ecc")
        signer = truck.identity_signer(identity)
        with truck.holding(identity, ak):
            held = [h for h in tpm.tool("tpm2_getcap", "handles-transient").split() if h != b"-"]
            assert len(held) == 2
            quote_info, signature = truck.quote(ak, b"nonce", "sha256", [0, 1, 2])
            with truck.holding(identity):
                signed = signer.sign(b"request", ec.ECDSA(hashes.SHA256()))
            assert [h for h in tpm.tool("tpm2_getcap", "handles-transient").split() if h != b"-"] == held
        verify_tpm_signature(ak.public, quote_info, signature)
        signer.public_key().verify(signed, b"request", ec.ECDSA(hashes.SHA256()))
        assert_nothing_loaded(tpm)
        with pytest.raises(RuntimeError, match="inside"), truck.holding(ak):
            raise RuntimeError("inside the block")
    assert_nothing_loaded(tpm)
