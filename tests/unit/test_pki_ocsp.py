from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from pki.errors import MalformedOcspRequest
from pki.ocsp import (
    CertStatus,
    OcspQuery,
    build_ocsp_response,
    issuer_matches,
    ocsp_error_response,
    parse_ocsp_request,
)
from pki.revocation import RevocationReason
from tests.unit.pki_helpers import NOW, CaPair, issue_truck, make_ca

NONCE = bytes(range(16))


@pytest.fixture
def ca(tmp_path: Path) -> CaPair:
    return make_ca(tmp_path)


def request_der(
    ca: CaPair, *, algorithm: hashes.HashAlgorithm | None = None, nonce: bytes | None = NONCE
) -> bytes:
    leaf = issue_truck(ca)
    builder = ocsp.OCSPRequestBuilder().add_certificate(
        leaf, ca.issuing.certificate, algorithm or hashes.SHA1()
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("algorithm", [hashes.SHA1(), hashes.SHA256()], ids=["sha1", "sha256"])
def test_parse_and_match(ca: CaPair, algorithm: hashes.HashAlgorithm) -> None:
    query = parse_ocsp_request(request_der(ca, algorithm=algorithm))
    assert query.serial == issue_truck(ca).serial_number
    assert query.hash_algorithm.name == algorithm.name
    assert query.nonce == NONCE
    assert issuer_matches(query, ca.issuing)
    assert not issuer_matches(query, ca.root)


def test_request_without_nonce(ca: CaPair) -> None:
    query = parse_ocsp_request(request_der(ca, nonce=None))
    assert query.nonce is None
    response = ocsp.load_der_ocsp_response(
        build_ocsp_response(ca.issuing, query, CertStatus.GOOD, now=NOW, validity=timedelta(hours=1))
    )
    with pytest.raises(x509.ExtensionNotFound):
        response.extensions.get_extension_for_class(x509.OCSPNonce)


def test_ocsp_request_for_another_issuer(ca: CaPair, tmp_path: Path) -> None:
    other = make_ca(tmp_path / "other")
    query = parse_ocsp_request(request_der(other))
    assert not issuer_matches(query, ca.issuing)


def test_malformed_ocsp_request() -> None:
    with pytest.raises(MalformedOcspRequest):
        parse_ocsp_request(b"\x30\x03\x02\x01\x00")


def test_truncated_ocsp_request(ca: CaPair) -> None:
    with pytest.raises(MalformedOcspRequest):
        parse_ocsp_request(request_der(ca)[:-3])


def test_empty_ocsp_nonce(ca: CaPair) -> None:
    with pytest.raises(MalformedOcspRequest, match="nonce"):
        parse_ocsp_request(request_der(ca, nonce=b""))


def good_query(ca: CaPair) -> OcspQuery:
    return parse_ocsp_request(request_der(ca))


def test_good_response(ca: CaPair) -> None:
    query = good_query(ca)
    der = build_ocsp_response(ca.issuing, query, CertStatus.GOOD, now=NOW, validity=timedelta(hours=1))
    response = ocsp.load_der_ocsp_response(der)
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert response.serial_number == query.serial
    assert response.this_update_utc == NOW
    assert response.next_update_utc == NOW + timedelta(hours=1)
    assert response.responder_key_hash == ca.issuing.subject_key_identifier.digest
    assert response.responder_name is None
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == NONCE
    assert response.issuer_key_hash == query.issuer_key_hash
    signature_hash = response.signature_hash_algorithm
    public_key = ca.issuing.certificate.public_key()
    assert signature_hash is not None and isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(signature_hash))


def test_revoked_response(ca: CaPair) -> None:
    revoked_at = NOW - timedelta(minutes=5)
    der = build_ocsp_response(
        ca.issuing,
        good_query(ca),
        CertStatus.REVOKED,
        now=NOW,
        validity=timedelta(hours=1),
        revoked_at=revoked_at,
        reason=RevocationReason.KEY_COMPROMISE,
    )
    response = ocsp.load_der_ocsp_response(der)
    assert response.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_time_utc == revoked_at
    assert response.revocation_reason is x509.ReasonFlags.key_compromise


def test_revoked_unspecified_omits_reason(ca: CaPair) -> None:
    der = build_ocsp_response(
        ca.issuing,
        good_query(ca),
        CertStatus.REVOKED,
        now=NOW,
        validity=timedelta(hours=1),
        revoked_at=NOW,
        reason=RevocationReason.UNSPECIFIED,
    )
    assert ocsp.load_der_ocsp_response(der).revocation_reason is None


def test_unknown_response(ca: CaPair) -> None:
    der = build_ocsp_response(
        ca.issuing, good_query(ca), CertStatus.UNKNOWN, now=NOW, validity=timedelta(hours=1)
    )
    assert ocsp.load_der_ocsp_response(der).certificate_status is ocsp.OCSPCertStatus.UNKNOWN


def test_revoked_without_time_is_a_programming_error(ca: CaPair) -> None:
    with pytest.raises(ValueError, match="revoked_at"):
        build_ocsp_response(
            ca.issuing, good_query(ca), CertStatus.REVOKED, now=NOW, validity=timedelta(hours=1)
        )


@pytest.mark.parametrize(
    "status", [ocsp.OCSPResponseStatus.MALFORMED_REQUEST, ocsp.OCSPResponseStatus.UNAUTHORIZED]
)
def test_error_responses(status: ocsp.OCSPResponseStatus) -> None:
    assert ocsp.load_der_ocsp_response(ocsp_error_response(status)).response_status is status


def test_error_response_cannot_be_successful() -> None:
    with pytest.raises(ValueError, match="successful"):
        ocsp_error_response(ocsp.OCSPResponseStatus.SUCCESSFUL)
