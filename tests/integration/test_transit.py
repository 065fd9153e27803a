"""Transit key backend against a real OpenBao dev server."""

from __future__ import annotations

import copy
import datetime
import pickle
from collections.abc import Iterator

import hvac
import jwt
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from pki.errors import KeyNotFound, SignerUnavailable
from pki.jws import key_id, public_jwk, sign_compact
from pki.signer import KeyAlgorithm, Signer
from provision.transit import PrivateKeyNotExportable, TransitBackend, TransitSigner
from tests.support.openbao import OpenBao, stop

pytestmark = pytest.mark.integration

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "weighstation transit test")])
ALGORITHMS = list(KeyAlgorithm)


@pytest.fixture(scope="module")
def backend(openbao: OpenBao) -> Iterator[TransitBackend]:
    # RSA-3072 key creation in Transit can take seconds on a busy box.
    b = TransitBackend.connect(openbao.addr, openbao.token, timeout=30.0)
    yield b
    b.close()


@pytest.fixture(scope="module")
def signers(backend: TransitBackend) -> dict[KeyAlgorithm, TransitSigner]:
    # One key per algorithm for the module: RSA-3072 generation in Vault is not free.
    return {alg: backend.create(alg, f"test-{alg.value}") for alg in ALGORITHMS}


def self_signed(signer: Signer) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(NAME)
        .issuer_name(NAME)
        .public_key(signer.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(signer.private_key(), builder_hash(signer))
    )


def builder_hash(signer: Signer) -> hashes.SHA256 | hashes.SHA384 | None:
    # KeyAlgorithm.signing_hash() is typed HashAlgorithm; the builders' stubs want the concrete classes.
    hash_ = signer.algorithm.signing_hash()
    assert hash_ is None or isinstance(hash_, hashes.SHA256 | hashes.SHA384)
    return hash_


def verify_raw(public: CertificateIssuerPublicKeyTypes, signature: bytes, data: bytes) -> None:
    if isinstance(public, ec.EllipticCurvePublicKey):
        public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    elif isinstance(public, rsa.RSAPublicKey):
        public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(public, ed25519.Ed25519PublicKey):
        public.verify(signature, data)
    else:
        raise AssertionError(type(public))


def raw_sign(signer: Signer, data: bytes) -> bytes:
    key = signer.private_key()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    raise AssertionError(type(key))


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=str)
def test_self_signed_certificate_verifies(
    signers: dict[KeyAlgorithm, TransitSigner], algorithm: KeyAlgorithm
) -> None:
    signer = signers[algorithm]
    assert isinstance(signer, Signer)
    assert signer.algorithm is algorithm
    assert signer.key_ref.startswith(f"transit:test-{algorithm.value}-")
    cert = self_signed(signer)
    cert.verify_directly_issued_by(cert)
    assert cert.public_key() == signer.public_key()


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=str)
def test_crl_signature_verifies(signers: dict[KeyAlgorithm, TransitSigner], algorithm: KeyAlgorithm) -> None:
    signer = signers[algorithm]
    revoked = x509.RevokedCertificateBuilder().serial_number(42).revocation_date(NOW).build()
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(NAME)
        .last_update(NOW)
        .next_update(NOW + datetime.timedelta(hours=1))
        .add_revoked_certificate(revoked)
        .sign(signer.private_key(), builder_hash(signer))
    )
    assert crl.is_signature_valid(signer.public_key())
    assert crl.get_revoked_certificate_by_serial_number(42) is not None


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=str)
def test_ocsp_response_signature_verifies(
    signers: dict[KeyAlgorithm, TransitSigner], algorithm: KeyAlgorithm
) -> None:
    signer = signers[algorithm]
    cert = self_signed(signer)
    response = (
        ocsp.OCSPResponseBuilder()
        .add_response(cert, cert, hashes.SHA256(), ocsp.OCSPCertStatus.GOOD, NOW, None, None, None)
        .responder_id(ocsp.OCSPResponderEncoding.HASH, cert)
        .sign(signer.private_key(), builder_hash(signer))
    )
    tbs, signature = response.tbs_response_bytes, response.signature
    public = signer.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        public.verify(signature, tbs)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        hash_ = signer.algorithm.signing_hash()
        assert hash_ is not None
        public.verify(signature, tbs, ec.ECDSA(hash_))
    elif isinstance(public, rsa.RSAPublicKey):
        public.verify(signature, tbs, padding.PKCS1v15(), hashes.SHA256())


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=str)
def test_key_ref_round_trips_through_fresh_backend(
    openbao: OpenBao, signers: dict[KeyAlgorithm, TransitSigner], algorithm: KeyAlgorithm
) -> None:
    signer = signers[algorithm]
    fresh = TransitBackend.connect(openbao.addr, openbao.token)
    try:
        loaded = fresh.load(signer.key_ref)
        assert loaded.key_ref == signer.key_ref
        assert loaded.algorithm is algorithm
        assert loaded.public_key() == signer.public_key()
        # A signature made through one backend verifies with the other's public key.
        verify_raw(loaded.public_key(), raw_sign(signer, b"payload"), b"payload")
    finally:
        fresh.close()


def test_load_is_cached(backend: TransitBackend, signers: dict[KeyAlgorithm, TransitSigner]) -> None:
    ref = signers[KeyAlgorithm.EC_P256].key_ref
    assert backend.load(ref) is backend.load(ref)


def test_load_unknown_key_is_key_not_found(backend: TransitBackend) -> None:
    with pytest.raises(KeyNotFound):
        backend.load("transit:no-such-key-0000")


@pytest.mark.parametrize(
    "ref",
    [
        "file:abcd",
        "transit:",
        "transit:..",
        "transit:../sys/health",
        "transit:a/b",
        "transit:a b",
        "transit:a@x",
        "transit:a@1@2",
        "Transit:x",
    ],
)
def test_malformed_ref_is_key_not_found(backend: TransitBackend, ref: str) -> None:
    with pytest.raises(KeyNotFound):
        backend.load(ref)


def test_create_rejects_bad_label(backend: TransitBackend) -> None:
    with pytest.raises(ValueError, match="label"):
        backend.create(KeyAlgorithm.EC_P256, "bad/label")


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=str)
def test_wrapper_never_exposes_private_material(
    signers: dict[KeyAlgorithm, TransitSigner], algorithm: KeyAlgorithm
) -> None:
    key = signers[algorithm].private_key()
    with pytest.raises(PrivateKeyNotExportable, match="cannot leave"):
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    with pytest.raises(PrivateKeyNotExportable):
        pickle.dumps(key)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        with pytest.raises(PrivateKeyNotExportable):
            key.private_numbers()
        with pytest.raises(PrivateKeyNotExportable):
            key.exchange(ec.ECDH(), key.public_key())
    elif isinstance(key, rsa.RSAPrivateKey):
        with pytest.raises(PrivateKeyNotExportable):
            key.private_numbers()
        with pytest.raises(PrivateKeyNotExportable):
            key.decrypt(b"x", padding.PKCS1v15())
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        with pytest.raises(PrivateKeyNotExportable):
            key.private_bytes_raw()
    # A copy is another handle on the same Vault key.
    assert copy.copy(key) is key
    assert copy.deepcopy(key) is key


def test_rsa_pss_is_refused(signers: dict[KeyAlgorithm, TransitSigner]) -> None:
    key = signers[KeyAlgorithm.RSA_3072].private_key()
    assert isinstance(key, rsa.RSAPrivateKey)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
    with pytest.raises(ValueError, match="PKCS1v15"):
        key.sign(b"data", pss, hashes.SHA256())


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.EC_P256, KeyAlgorithm.EC_P384], ids=str)
def test_ecdsa_prehashed(signers: dict[KeyAlgorithm, TransitSigner], algorithm: KeyAlgorithm) -> None:
    signer = signers[algorithm]
    key, public = signer.private_key(), signer.public_key()
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    hash_ = hashes.SHA384() if algorithm is KeyAlgorithm.EC_P384 else hashes.SHA256()
    h = hashes.Hash(hash_)
    h.update(b"manifest")
    digest = h.finalize()
    signature = key.sign(digest, ec.ECDSA(utils.Prehashed(hash_)))
    public.verify(signature, b"manifest", ec.ECDSA(hash_))
    with pytest.raises(ValueError, match="digest size"):
        key.sign(digest[:-1], ec.ECDSA(utils.Prehashed(hash_)))


def test_rotation_in_vault_keeps_pinned_version(openbao: OpenBao, backend: TransitBackend) -> None:
    signer = backend.create(KeyAlgorithm.EC_P256, "rotate")
    original = signer.public_key()
    assert signer.key_version == 1
    name = signer.key_ref.removeprefix("transit:").partition("@")[0]
    admin = hvac.Client(url=openbao.addr, token=openbao.token)
    try:
        admin.adapter.post(f"/v1/transit/keys/{name}/rotate")
    finally:
        admin.adapter.close()

    # The rotation is real: an unversioned ref sees a different latest key, while the stored,
    # versioned ref still pins v1 after a "restart" (a fresh backend).
    fresh = TransitBackend.connect(openbao.addr, openbao.token)
    try:
        assert fresh.load(f"transit:{name}").public_key() != original
        restarted = fresh.load(signer.key_ref)
        assert restarted.key_version == 1 and restarted.public_key() == original
        with pytest.raises(KeyNotFound):
            fresh.load(f"transit:{name}@7")
    finally:
        fresh.close()

    cert = self_signed(signer)
    cert.verify_directly_issued_by(cert)
    assert cert.public_key() == original
    assert isinstance(original, ec.EllipticCurvePublicKey)
    signature = raw_sign(signer, b"after rotation")
    original.verify(signature, b"after rotation", ec.ECDSA(hashes.SHA256()))


def test_signature_from_other_key_does_not_verify(signers: dict[KeyAlgorithm, TransitSigner]) -> None:
    # Guard against a verifier that accepts anything.
    p256 = signers[KeyAlgorithm.EC_P256]
    other = signers[KeyAlgorithm.EC_P384].public_key()
    assert isinstance(other, ec.EllipticCurvePublicKey)
    with pytest.raises(InvalidSignature):
        other.verify(raw_sign(p256, b"x"), b"x", ec.ECDSA(hashes.SHA256()))


def test_check_passes_when_up(backend: TransitBackend, signers: dict[KeyAlgorithm, TransitSigner]) -> None:
    backend.check()  # raises SignerUnavailable when Vault is down or sealed (tested below)
    assert raw_sign(signers[KeyAlgorithm.EC_P256], b"ready")


def test_bad_token_is_unavailable(openbao: OpenBao) -> None:
    b = TransitBackend.connect(openbao.addr, "not-a-valid-token", timeout=2.0)
    try:
        with pytest.raises(SignerUnavailable):
            b.check()
    finally:
        b.close()


@pytest.mark.timeout(60)
def test_unreachable_server_is_signer_unavailable(fresh_openbao: OpenBao) -> None:
    b = TransitBackend.connect(fresh_openbao.addr, fresh_openbao.token, timeout=2.0)
    try:
        signer = b.create(KeyAlgorithm.EC_P256, "doomed")
        raw_sign(signer, b"while up")
        stop(fresh_openbao.process)
        with pytest.raises(SignerUnavailable, match="unavailable"):
            raw_sign(signer, b"after stop")
        with pytest.raises(SignerUnavailable):
            self_signed(signer)
        with pytest.raises(SignerUnavailable):
            b.check()
        with pytest.raises(SignerUnavailable):
            b.load("transit:never-loaded")
    finally:
        b.close()


@pytest.mark.parametrize(
    ("algorithm", "alg"), [(KeyAlgorithm.EC_P256, "ES256"), (KeyAlgorithm.EC_P384, "ES384")]
)
def test_result_token_signed_in_transit_verifies_with_its_jwk(
    signers: dict[KeyAlgorithm, TransitSigner], algorithm: KeyAlgorithm, alg: str
) -> None:
    """Attestation result tokens are signed by Transit like CA keys; pyjwt checks them with the JWK."""
    signer = signers[algorithm]
    kid = key_id(signer)
    token = sign_compact(signer, {"sub": "t-001", "ear.status": "affirming"}, kid=kid)
    key = jwt.PyJWK(public_jwk(signer, kid=kid)).key
    assert jwt.decode(token, key, algorithms=[alg]) == {"sub": "t-001", "ear.status": "affirming"}
