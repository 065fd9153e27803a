"""RFC 6962 signed certificate timestamps for precertificates, issued by our own CT key.

The SCT's signature covers (§3.2): sct_version(0) ‖ signature_type certificate_timestamp(0) ‖
timestamp (ms, u64) ‖ entry_type precert_entry(1) ‖ issuer_key_hash (SHA-256 of the issuing CA's
SubjectPublicKeyInfo) ‖ TBSCertificate of the precertificate without its poison extension (u24
length) ‖ extensions (u16 length). The log ID is SHA-256 of the CT key's SubjectPublicKeyInfo.
The embedded form is a SignedCertificateTimestampList inside an OCTET STRING extension value.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from pki import der
from pki.errors import SignerUnavailable
from pki.signer import KeyAlgorithm, Signer

SCT_LIST_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
_V1 = 0
_CERTIFICATE_TIMESTAMP = 0
_PRECERT_ENTRY = 1
_SHA256 = 4  # TLS HashAlgorithm
_ECDSA = 3  # TLS SignatureAlgorithm


def spki_sha256(public_key: PublicKeyTypes) -> bytes:
    """SHA-256 over the DER SubjectPublicKeyInfo: RFC 6962's LogID and issuer_key_hash."""
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()


def _u24(data: bytes) -> bytes:
    if len(data) >= 1 << 24:
        raise ValueError("TBSCertificate too large for an SCT")
    return len(data).to_bytes(3, "big") + data


def _u16(data: bytes) -> bytes:
    if len(data) >= 1 << 16:
        raise ValueError("value too large for a 16-bit length")
    return len(data).to_bytes(2, "big") + data


def precert_signed_data(
    timestamp_ms: int, issuer_key_hash: bytes, tbs: bytes, extensions: bytes = b""
) -> bytes:
    """The bytes an SCT for a precertificate signs (RFC 6962 §3.2, digitally-signed struct)."""
    if len(issuer_key_hash) != 32:
        raise ValueError("issuer_key_hash is 32 bytes")
    head = struct.pack("!BBQH", _V1, _CERTIFICATE_TIMESTAMP, timestamp_ms, _PRECERT_ENTRY)
    return head + issuer_key_hash + _u24(tbs) + _u16(extensions)


@dataclass(frozen=True)
class Sct:
    log_id: bytes
    timestamp_ms: int
    signature: bytes  # DER ECDSA
    extensions: bytes = b""

    def encode(self) -> bytes:
        """The TLS encoding of one SignedCertificateTimestamp."""
        digitally_signed = bytes([_SHA256, _ECDSA]) + _u16(self.signature)
        head = bytes([_V1]) + self.log_id + struct.pack("!Q", self.timestamp_ms)
        return head + _u16(self.extensions) + digitally_signed


def sct_list_extension(scts: list[Sct]) -> x509.UnrecognizedExtension:
    """The certificate extension: OCTET STRING of SignedCertificateTimestampList (§3.3)."""
    listed = _u16(b"".join(_u16(s.encode()) for s in scts))
    return x509.UnrecognizedExtension(SCT_LIST_OID, der.octet_string(listed))


@dataclass(frozen=True)
class CtLog:
    """Our CT key (ECDSA P-256 through the key backend): signs SCTs for precertificates."""

    signer: Signer

    def __post_init__(self) -> None:
        if self.signer.algorithm is not KeyAlgorithm.EC_P256:
            raise ValueError(f"the CT key is EC P-256, not {self.signer.algorithm}")

    @property
    def log_id(self) -> bytes:
        return spki_sha256(self.signer.public_key())

    def sign_precertificate(self, *, timestamp_ms: int, issuer_key_hash: bytes, tbs: bytes) -> Sct:
        data = precert_signed_data(timestamp_ms, issuer_key_hash, tbs)
        key = self.signer.private_key()
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise SignerUnavailable(f"CT key {self.signer.key_ref} is not an EC key")
        signature = key.sign(data, ec.ECDSA(hashes.SHA256()))
        public = self.signer.public_key()
        try:
            # A remote backend could hand back anything: never embed an SCT that does not verify.
            if not isinstance(public, ec.EllipticCurvePublicKey):
                raise InvalidSignature
            public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise SignerUnavailable(f"CT key {self.signer.key_ref} returned a bad signature") from None
        return Sct(self.log_id, timestamp_ms, signature)
