"""OCSP (RFC 6960): parse a request, match it to an issuing CA, answer signed by that CA's own key."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import lru_cache

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from pki.ca import Issuer
from pki.errors import MalformedOcspRequest
from pki.revocation import RevocationReason, to_x509
from pki.validity import as_utc

_MAX_REQUEST_BYTES = 16 * 1024
_MAX_NONCE_BYTES = 128  # RFC 8954 §2.1: longer nonces are refused
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,  # RFC 6960 CertID default; what most clients (and openssl) still send
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


class CertStatus(StrEnum):
    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"  # a serial this issuer never issued


_TO_OCSP = {
    CertStatus.GOOD: ocsp.OCSPCertStatus.GOOD,
    CertStatus.REVOKED: ocsp.OCSPCertStatus.REVOKED,
    CertStatus.UNKNOWN: ocsp.OCSPCertStatus.UNKNOWN,
}


@dataclass(frozen=True)
class OcspQuery:
    """The single CertID of an OCSPRequest, plus its nonce (echoed back)."""

    serial: int
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    hash_algorithm: hashes.HashAlgorithm
    nonce: bytes | None


def parse_ocsp_request(der: bytes) -> OcspQuery:
    """Strict DER parse; any failure, unsupported CertID hash or bad nonce is MalformedOcspRequest."""
    if not der or len(der) > _MAX_REQUEST_BYTES:
        raise MalformedOcspRequest("OCSP request is empty or too large")
    try:
        # cryptography parses exactly one Request per OCSPRequest and refuses more.
        request = ocsp.load_der_ocsp_request(der)
        algorithm = request.hash_algorithm
        query_serial = request.serial_number
        name_hash, key_hash = request.issuer_name_hash, request.issuer_key_hash
        extensions = request.extensions
    except (ValueError, NotImplementedError, UnsupportedAlgorithm) as exc:
        raise MalformedOcspRequest(f"OCSP request does not parse: {exc}") from None
    hash_type = _HASHES.get(algorithm.name)
    if hash_type is None:
        raise MalformedOcspRequest(f"CertID hash {algorithm.name} is not supported")
    if len(name_hash) != algorithm.digest_size or len(key_hash) != algorithm.digest_size:
        raise MalformedOcspRequest("CertID hash lengths do not match the hash algorithm")
    nonce: bytes | None = None
    with contextlib.suppress(x509.ExtensionNotFound):
        nonce = extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    if nonce is not None and not 0 < len(nonce) <= _MAX_NONCE_BYTES:
        raise MalformedOcspRequest(f"OCSP nonce must be 1 to {_MAX_NONCE_BYTES} bytes")
    return OcspQuery(
        serial=query_serial,
        issuer_name_hash=name_hash,
        issuer_key_hash=key_hash,
        hash_algorithm=hash_type(),
        nonce=nonce,
    )


def issuer_matches(query: OcspQuery, issuer: Issuer) -> bool:
    """Does the CertID name this issuer? Recomputed with the query's own hash algorithm (RFC 6960 §4.1.1)."""
    name_hash, key_hash = _issuer_hashes(issuer.certificate, query.hash_algorithm.name)
    return name_hash == query.issuer_name_hash and key_hash == query.issuer_key_hash


def build_ocsp_response(
    issuer: Issuer,
    query: OcspQuery,
    status: CertStatus,
    *,
    now: datetime,
    validity: timedelta,
    revoked_at: datetime | None = None,
    reason: RevocationReason | None = None,
) -> bytes:
    """A successful BasicOCSPResponse in DER, signed by the issuing CA (responder id = key hash)."""
    if validity <= timedelta(0):
        raise ValueError("validity must be positive")
    if (status is CertStatus.REVOKED) != (revoked_at is not None):
        raise ValueError("revoked_at is required for, and only for, a revoked status")
    now = as_utc(now)
    revocation_reason = None
    if status is CertStatus.REVOKED and reason is not None and reason is not RevocationReason.UNSPECIFIED:
        revocation_reason = to_x509(reason)
    builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
        issuer_name_hash=query.issuer_name_hash,
        issuer_key_hash=query.issuer_key_hash,
        serial_number=query.serial,
        algorithm=query.hash_algorithm,
        cert_status=_TO_OCSP[status],
        this_update=now,
        next_update=now + validity,
        revocation_time=None if revoked_at is None else as_utc(revoked_at),
        revocation_reason=revocation_reason,
    )
    builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, issuer.certificate)
    if query.nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(query.nonce), critical=False)
    signer = issuer.signer
    response = builder.sign(signer.private_key(), signer.algorithm.signing_hash())
    return response.public_bytes(serialization.Encoding.DER)


def ocsp_error_response(status: ocsp.OCSPResponseStatus) -> bytes:
    """An unsigned error OCSPResponse (malformedRequest, unauthorized, ...)."""
    if status is ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise ValueError("a successful response must be built with build_ocsp_response")
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER)


@lru_cache(maxsize=64)
def _issuer_hashes(certificate: x509.Certificate, hash_name: str) -> tuple[bytes, bytes]:
    hash_type = _HASHES.get(hash_name)
    if hash_type is None:
        return b"", b""
    name_digest = hashes.Hash(hash_type())
    name_digest.update(certificate.subject.public_bytes())
    key_digest = hashes.Hash(hash_type())
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_digest.update(_subject_public_key_bits(spki))
    return name_digest.finalize(), key_digest.finalize()


def _subject_public_key_bits(spki: bytes) -> bytes:
    """The BIT STRING contents of SubjectPublicKeyInfo, without the unused-bits octet (RFC 6960 §4.1.1)."""
    offset = _header_end(spki, 0, 0x30)  # SubjectPublicKeyInfo SEQUENCE
    algorithm_end = _content_end(spki, offset, 0x30)  # skip AlgorithmIdentifier
    start = _header_end(spki, algorithm_end, 0x03)
    end = _content_end(spki, algorithm_end, 0x03)
    return spki[start + 1 : end]


def _read_header(data: bytes, offset: int, tag: int) -> tuple[int, int]:
    """(content start, content length) of the DER TLV at offset, which must carry `tag`."""
    if data[offset] != tag:
        raise ValueError("unexpected DER tag in SubjectPublicKeyInfo")
    length = data[offset + 1]
    offset += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[offset : offset + count], "big")
        offset += count
    return offset, length


def _header_end(data: bytes, offset: int, tag: int) -> int:
    return _read_header(data, offset, tag)[0]


def _content_end(data: bytes, offset: int, tag: int) -> int:
    start, length = _read_header(data, offset, tag)
    return start + length
