"""In-process issuance: our profile check + issue from CSR vs the raw `cryptography` sign-from-CSR
(parse + verify the CSR, build the same certificate, sign) on the same CSRs and the same CA key.

    .venv/bin/python -m bench.issuance [--n 2000]
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bench.common import alternating, table
from pki.ca import Issuer, build_issuing_ca, build_root_ca
from pki.filekeys import FileKeyBackend
from pki.issue import issue_certificate
from pki.profiles import parse_csr, profile_for, validate_request
from pki.signer import KeyAlgorithm

DOMAIN = "bench.test"


def make_csrs(count: int) -> list[bytes]:
    csrs = []
    for i in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        uri = f"spiffe://{DOMAIN}/fleet/f1/truck/t-{i}"
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"t-{i}")]))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
            .sign(key, hashes.SHA256())
        )
        csrs.append(csr.public_bytes(serialization.Encoding.PEM))
    return csrs


def make_issuer(directory: Path, now: datetime) -> Issuer:
    keys = FileKeyBackend(directory, b"bench")
    root_signer = keys.create(KeyAlgorithm.EC_P256, "root")
    root_cert = build_root_ca(
        root_signer, common_name="bench root", now=now, ttl=timedelta(days=3650), serial=1
    )
    root = Issuer(certificate=root_cert, signer=root_signer, chain=())
    signer = keys.create(KeyAlgorithm.EC_P256, "issuing")
    cert = build_issuing_ca(
        root,
        signer.public_key(),
        common_name="bench issuing",
        trust_domain=DOMAIN,
        now=now,
        ttl=timedelta(days=365),
        serial=2,
    )
    return Issuer(certificate=cert, signer=signer, chain=(root_cert,))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as tmp:
        issuer = make_issuer(Path(tmp), now)
    csrs = make_csrs(200)
    key = issuer.signer.private_key()
    issuer_name = issuer.certificate.subject
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
        issuer.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    )
    profile = profile_for("truck")

    def raw(i: int) -> x509.Certificate:
        csr = x509.load_pem_x509_csr(csrs[i % len(csrs)])
        if not csr.is_signature_valid:
            raise ValueError("bad CSR")
        public = csr.public_key()
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"t-{i}")]))
            .issuer_name(issuer_name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + timedelta(hours=24))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(san, critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(aki, critical=False)
            .sign(key, hashes.SHA256())
        )

    def ours(i: int) -> x509.Certificate:
        request = validate_request(profile, parse_csr(csrs[i % len(csrs)]), trust_domain=DOMAIN)
        return issue_certificate(issuer, request, now=now, serial=x509.random_serial_number())

    base, mine = alternating(raw, ours, args.n)
    print(
        table(
            [
                ("raw cryptography sign-from-CSR", f"{base:,.0f} certs/s ({1e6 / base:.0f} µs)"),
                ("weighstation profile + issue", f"{mine:,.0f} certs/s ({1e6 / mine:.0f} µs)"),
                ("ratio (goal >= 0.7)", f"{mine / base:.2f}x"),
            ]
        )
    )


if __name__ == "__main__":
    main()
