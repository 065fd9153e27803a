"""The pure pieces of the Sigstore export: the DER encoder, RFC 6962 SCTs on evidence certificates,
RFC 3161 tokens, the hashedrekord 0.0.2 body and the log ID (the stock client's checks run end to end in
tests/integration/test_sigstore_export.py)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.certificate_transparency import LogEntryType
from rfc3161_client import decode_timestamp_response
from sigstore_models.rekor.v2.entry import Entry

from pki import der
from pki.ca import Issuer, build_root_ca
from pki.evidence_signing import OIDC_ISSUER_V1, OIDC_ISSUER_V2, build_evidence_ca, issue_evidence_certificate
from pki.filekeys import FileKeyBackend
from pki.profiles import profile_for, validate_request
from pki.sct import CtLog, precert_signed_data, spki_sha256
from pki.signer import KeyAlgorithm
from pki.tsa import DEFAULT_POLICY, TimeStampAuthority, build_tsa_certificate
from tests.support.csr import build_csr, truck_uri
from tlog.note import NoteSigner
from tlog.sigstore import hashedrekord_body, log_id

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        (der.integer(0), "020100"),
        (der.integer(127), "02017f"),
        (der.integer(128), "02020080"),
        (der.integer(256), "02020100"),
        (der.oid("1.2.840.113549.1.7.2"), "06092a864886f70d010702"),
        (der.oid("2.16.840.1.101.3.4.2.1"), "0609608648016503040201"),
        (der.generalized_time(NOW), "180f32303236313132343132303030305a"),
        (der.boolean(True), "0101ff"),
        (der.set_of(der.integer(2), der.integer(1)), "3106020101020102"),
        (der.explicit(0, der.integer(1)), "a003020101"),
        (der.implicit_constructed(0, der.sequence(der.integer(1))), "a003020101"),
    ],
)
def test_der_vectors(encoded: bytes, expected: str) -> None:
    assert encoded.hex() == expected


def test_der_long_form_length() -> None:
    assert der.octet_string(b"\x00" * 200)[:3].hex() == "0481c8"
    assert der.octet_string(b"\x00" * 300)[:4].hex() == "0482012c"


@pytest.fixture
def keys(tmp_path: Path) -> FileKeyBackend:
    return FileKeyBackend(tmp_path, b"secret")


@pytest.fixture
def evidence_ca(keys: FileKeyBackend) -> Issuer:
    root_signer = keys.create(KeyAlgorithm.EC_P256, "root")
    root_cert = build_root_ca(root_signer, common_name="root", now=NOW, ttl=timedelta(days=365), serial=1)
    root = Issuer(root_cert, root_signer, ())
    signer = keys.create(KeyAlgorithm.EC_P256, "evidence")
    cert = build_evidence_ca(
        root, signer.public_key(), common_name="evidence", now=NOW, ttl=timedelta(days=30), serial=2
    )
    return Issuer(cert, signer, (root_cert,))


def test_evidence_certificate_has_one_sct_over_its_precertificate(
    keys: FileKeyBackend, evidence_ca: Issuer
) -> None:
    ct = CtLog(keys.create(KeyAlgorithm.EC_P256, "ct"))
    key = ec.generate_private_key(ec.SECP256R1())
    request = validate_request(
        profile_for("evidence"), build_csr(key, uris=[truck_uri()]), trust_domain="fleet.test"
    )
    issued = issue_evidence_certificate(
        evidence_ca, request, ct, now=NOW, serial=99, urls=None, oidc_issuer="https://ws.example"
    )
    cert = issued.certificate
    [sct] = cert.extensions.get_extension_for_class(x509.PrecertificateSignedCertificateTimestamps).value
    assert sct.entry_type is LogEntryType.PRE_CERTIFICATE
    assert sct.log_id == spki_sha256(ct.signer.public_key()) == issued.sct.log_id
    assert sct.timestamp.replace(tzinfo=UTC) == NOW
    signed = precert_signed_data(
        int(NOW.timestamp() * 1000),
        spki_sha256(evidence_ca.certificate.public_key()),
        cert.tbs_precertificate_bytes,
    )
    public = ct.signer.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(sct.signature, signed, ec.ECDSA(hashes.SHA256()))
    v1 = cert.extensions.get_extension_for_oid(OIDC_ISSUER_V1).value
    v2 = cert.extensions.get_extension_for_oid(OIDC_ISSUER_V2).value
    assert isinstance(v1, x509.UnrecognizedExtension) and isinstance(v2, x509.UnrecognizedExtension)
    assert v1.value == b"https://ws.example" and v2.value == der.utf8_string("https://ws.example")
    assert issued.precertificate.extensions.get_extension_for_class(x509.PrecertPoison).critical
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.CODE_SIGNING]


def test_tsa_token_parses_and_stamps_the_digest(keys: FileKeyBackend, evidence_ca: Issuer) -> None:
    signer = keys.create(KeyAlgorithm.EC_P256, "tsa")
    cert = build_tsa_certificate(
        evidence_ca, signer, common_name="tsa", now=NOW, ttl=timedelta(days=30), serial=5
    )
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical and list(eku.value) == [x509.oid.ExtendedKeyUsageOID.TIME_STAMPING]
    digest = hashlib.sha256(b"signature").digest()
    response = decode_timestamp_response(TimeStampAuthority(signer, cert).respond(digest, at=NOW, serial=77))
    assert response.status == 0
    info = response.tst_info
    assert info.gen_time == NOW and info.serial_number == 77
    assert info.message_imprint.message == digest
    assert info.policy is not None and info.policy.dotted_string == DEFAULT_POLICY


def test_hashedrekord_body_is_canonical_and_parses(keys: FileKeyBackend, evidence_ca: Issuer) -> None:
    digest = hashlib.sha256(b"artifact").digest()
    body = hashedrekord_body(digest, b"\x30\x06sig", evidence_ca.certificate)
    document = json.loads(body)
    assert body == json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    entry = Entry.from_json(body)
    assert entry.kind == "hashedrekord" and entry.api_version == "0.0.2"
    assert entry.spec.hashed_rekord_v002 is not None
    assert entry.spec.hashed_rekord_v002.data.digest == digest


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.ED25519, KeyAlgorithm.EC_P256])
def test_log_id_extends_the_checkpoint_key_id(keys: FileKeyBackend, algorithm: KeyAlgorithm) -> None:
    verifier = NoteSigner.create("fleet.test/log", keys.create(algorithm, "log")).verifier_key
    assert int.from_bytes(log_id(verifier)[:4], "big") == verifier.key_id
