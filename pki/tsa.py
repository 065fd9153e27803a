"""RFC 3161 time-stamp authority: the TSA certificate profile and signed TimeStampResp tokens.

The token is CMS SignedData (RFC 5652) whose encapsulated content is a TSTInfo (RFC 3161 §2.4.2),
signed with ECDSA P-256/SHA-256 through the key backend. Signed attributes: contentType
(id-ct-TSTInfo), signingTime, messageDigest (SHA-256 of the TSTInfo DER) and signingCertificateV2
(RFC 5035 ESSCertIDv2, binding the TSA certificate). The TSA certificate is embedded in the token.
The TSA certificate's only EKU is id-kp-timeStamping, marked critical (RFC 3161 §2.3).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pki import der
from pki.ca import ORGANIZATION, Issuer, issued_by
from pki.errors import SignerUnavailable
from pki.issue import LEAF, SIGN_ONLY
from pki.signer import KeyAlgorithm, Signer

SHA256 = "2.16.840.1.101.3.4.2.1"
_ECDSA_SHA256 = "1.2.840.10045.4.3.2"
_SIGNED_DATA = "1.2.840.113549.1.7.2"
_TST_INFO = "1.2.840.113549.1.9.16.1.4"
_CONTENT_TYPE = "1.2.840.113549.1.9.3"
_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
_SIGNING_TIME = "1.2.840.113549.1.9.5"
_SIGNING_CERTIFICATE_V2 = "1.2.840.113549.1.9.16.2.47"
# Our TSA policy: a weighstation arc under the private-enterprise-style test arc of 1.3.6.1.4.1.
DEFAULT_POLICY = "1.3.6.1.4.1.57264.99.1"
_GRANTED = 0


def build_tsa_certificate(
    issuer: Issuer, signer: Signer, *, common_name: str, now: datetime, ttl: timedelta, serial: int
) -> x509.Certificate:
    """The TSA's certificate under `issuer`: digitalSignature, critical EKU timeStamping only."""
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        ]
    )
    builder = (
        issued_by(issuer, name, signer.public_key(), now=now, ttl=ttl, serial=serial)
        .add_extension(LEAF, critical=True)
        .add_extension(SIGN_ONLY, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
    )
    return builder.sign(issuer.signer.private_key(), issuer.signer.algorithm.signing_hash())


def _attribute(kind: str, value: bytes) -> bytes:
    return der.sequence(der.oid(kind), der.set_of(value))


@dataclass(frozen=True)
class TimeStampAuthority:
    """A TSA key (EC P-256 through the key backend) and its certificate."""

    signer: Signer
    certificate: x509.Certificate
    policy: str = DEFAULT_POLICY

    def __post_init__(self) -> None:
        if self.signer.algorithm is not KeyAlgorithm.EC_P256:
            raise ValueError(f"the TSA key is EC P-256, not {self.signer.algorithm}")
        if self.certificate.public_key() != self.signer.public_key():
            raise ValueError("the TSA certificate is not for the TSA key")

    def tst_info(self, digest: bytes, *, at: datetime, serial: int) -> bytes:
        """TSTInfo over a SHA-256 message imprint; genTime in whole seconds, no nonce (none requested)."""
        if len(digest) != 32:
            raise ValueError("the message imprint is a SHA-256 digest")
        return der.sequence(
            der.integer(1),
            der.oid(self.policy),
            der.sequence(der.algorithm(SHA256), der.octet_string(digest)),
            der.integer(serial),
            der.generalized_time(at),
        )

    def respond(self, digest: bytes, *, at: datetime, serial: int) -> bytes:
        """A granted TimeStampResp (DER) whose token stamps `digest` at `at`."""
        tst_info = self.tst_info(digest, at=at, serial=serial)
        cert_der = self.certificate.public_bytes(serialization.Encoding.DER)
        issuer_name = self.certificate.issuer.public_bytes()
        ess_cert_id = der.sequence(
            der.octet_string(hashlib.sha256(cert_der).digest()),
            # IssuerSerial: GeneralNames with the issuer as a directoryName ([4], explicit).
            der.sequence(
                der.sequence(der.explicit(4, issuer_name)), der.integer(self.certificate.serial_number)
            ),
        )
        attributes = [
            _attribute(_CONTENT_TYPE, der.oid(_TST_INFO)),
            _attribute(_SIGNING_TIME, der.generalized_time(at)),
            _attribute(_MESSAGE_DIGEST, der.octet_string(hashlib.sha256(tst_info).digest())),
            _attribute(_SIGNING_CERTIFICATE_V2, der.sequence(der.sequence(ess_cert_id))),
        ]
        signed_attributes = der.set_of(*attributes)  # what the signature covers (RFC 5652 §5.4)
        signature = self._sign(signed_attributes)
        signer_info = der.sequence(
            der.integer(1),
            der.sequence(issuer_name, der.integer(self.certificate.serial_number)),
            der.algorithm(SHA256),
            der.implicit_constructed(0, signed_attributes),
            der.algorithm(_ECDSA_SHA256),
            der.octet_string(signature),
        )
        signed_data = der.sequence(
            der.integer(3),
            der.set_of(der.algorithm(SHA256)),
            der.sequence(der.oid(_TST_INFO), der.explicit(0, der.octet_string(tst_info))),
            der.implicit_constructed(0, der.set_of(cert_der)),
            der.set_of(signer_info),
        )
        token = der.sequence(der.oid(_SIGNED_DATA), der.explicit(0, signed_data))
        return der.sequence(der.sequence(der.integer(_GRANTED)), token)

    def _sign(self, data: bytes) -> bytes:
        key = self.signer.private_key()
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise SignerUnavailable(f"TSA key {self.signer.key_ref} is not an EC key")
        signature = key.sign(data, ec.ECDSA(hashes.SHA256()))
        public = self.certificate.public_key()
        try:
            # A remote backend could hand back anything: never issue a token that does not verify.
            if not isinstance(public, ec.EllipticCurvePublicKey):
                raise InvalidSignature
            public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise SignerUnavailable(f"TSA key {self.signer.key_ref} returned a bad signature") from None
        return signature
