"""Shared builders for the pki unit tests: a CA pair on file keys, CSRs, PEM files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from pki.ca import Issuer, build_issuing_ca, build_root_ca
from pki.filekeys import FileKeyBackend
from pki.issue import IssuerUrls, issue_certificate
from pki.profiles import parse_csr, profile_for, validate_request
from pki.signer import KeyAlgorithm
from tests.support.csr import build_csr

TRUST_DOMAIN = "fleet.test"
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
ROOT_SERIAL = 0x1001
ISSUING_SERIAL = 0x2002
LEAF_SERIAL = 0x3003
URLS = IssuerUrls(crl_url="https://ca.fleet.test/v1/ca/crl", ocsp_url="https://ca.fleet.test/v1/ocsp")

CsrKey = (
    ec.EllipticCurvePrivateKey
    | rsa.RSAPrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
    | dsa.DSAPrivateKey
)


@dataclass(frozen=True)
class CaPair:
    backend: FileKeyBackend
    root: Issuer
    issuing: Issuer


def make_ca(
    directory: Path,
    algorithm: KeyAlgorithm = KeyAlgorithm.EC_P256,
    *,
    trust_domain: str = TRUST_DOMAIN,
    now: datetime = NOW,
) -> CaPair:
    backend = FileKeyBackend(directory / "keys", b"test-passphrase")
    root_signer = backend.create(algorithm, "root-ca")
    root_cert = build_root_ca(
        root_signer, common_name="test root", now=now, ttl=timedelta(days=3650), serial=ROOT_SERIAL
    )
    root = Issuer(certificate=root_cert, signer=root_signer, chain=())
    issuing_signer = backend.create(algorithm, "issuing-ca")
    issuing_cert = build_issuing_ca(
        root,
        issuing_signer.public_key(),
        common_name="test issuing",
        trust_domain=trust_domain,
        now=now,
        ttl=timedelta(days=365),
        serial=ISSUING_SERIAL,
    )
    issuing = Issuer(certificate=issuing_cert, signer=issuing_signer, chain=(root_cert,))
    return CaPair(backend=backend, root=root, issuing=issuing)


def truck_uri(fleet: str = "north", truck: str = "t-001", domain: str = TRUST_DOMAIN) -> str:
    return f"spiffe://{domain}/fleet/{fleet}/truck/{truck}"


def p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_csr_obj(
    key: CsrKey | None = None,
    *,
    uris: Sequence[str] = (),
    dns: Sequence[str] = (),
    common_name: str = "requested",
) -> x509.CertificateSigningRequest:
    return build_csr(key or p256(), uris=uris, dns=dns, common_name=common_name)


def make_csr(
    key: CsrKey | None = None,
    *,
    uris: Sequence[str] = (),
    dns: Sequence[str] = (),
    common_name: str = "requested",
) -> bytes:
    """A PEM CSR, as a client would send it."""
    csr = make_csr_obj(key, uris=uris, dns=dns, common_name=common_name)
    return csr.public_bytes(serialization.Encoding.PEM)


def issue_truck(
    ca: CaPair,
    key: CsrKey | None = None,
    *,
    uri: str | None = None,
    serial: int = LEAF_SERIAL,
    urls: IssuerUrls | None = URLS,
) -> x509.Certificate:
    csr = parse_csr(make_csr(key, uris=[uri or truck_uri()]))
    request = validate_request(profile_for("truck"), csr, trust_domain=TRUST_DOMAIN)
    return issue_certificate(ca.issuing, request, now=NOW, serial=serial, urls=urls)


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def write_pem(path: Path, *certs: x509.Certificate) -> Path:
    path.write_bytes(pem(*certs))
    return path
