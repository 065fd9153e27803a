"""Make CSRs the way a client would, with cryptography."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID


def build_csr(
    key: CertificateIssuerPrivateKeyTypes,
    *,
    uris: Sequence[str] = (),
    dns: Sequence[str] = (),
    common_name: str = "requested",
) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    )
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    names += [x509.DNSName(d) for d in dns]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    algorithm = (
        None if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)) else hashes.SHA256()
    )
    return builder.sign(key, algorithm)


def make_csr(
    key: CertificateIssuerPrivateKeyTypes | None = None,
    *,
    uris: Sequence[str] = (),
    dns: Sequence[str] = (),
    common_name: str = "requested",
) -> tuple[CertificateIssuerPrivateKeyTypes, str]:
    """A fresh (or given) key and its PEM CSR, as a client would send it."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = build_csr(key, uris=uris, dns=dns, common_name=common_name)
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def truck_uri(fleet: str = "north", truck: str = "t-001", domain: str = "fleet.test") -> str:
    return f"spiffe://{domain}/fleet/{fleet}/truck/{truck}"
