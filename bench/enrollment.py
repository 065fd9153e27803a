"""Server-side enrollment checks per truck vs the raw crypto operations they contain, on vectors recorded
from swtpm (tests/unit/vectors/attest).

Ours: EK chain to the pinned root, EK public = certificate key, AK checks and name, MakeCredential
(ECC P-384 EK: ephemeral key + ECDH + KDFs + AES-CFB + HMAC), Certify verification (strict parsing,
pinned-scheme signature, nonce, name, identity attributes, CSR key), CSR signature.
Baseline: the same raw `cryptography` operations alone: two certificate signature checks (EK leaf,
intermediate), one P-384 key generation + ECDH, one ECDSA verify of the Certify, one CSR signature check.

    .venv/bin/python -m bench.enrollment [--n 2000]
"""

from __future__ import annotations

import argparse
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from attest.ak import check_attestation_key
from attest.attestation import EcdsaSignature, parse_tpmt_signature
from attest.certify import verify_certify
from attest.credential import make_credential
from attest.ek import check_ek_matches, verify_ek_certificate
from attest.public import parse_tpm2b_public, parse_tpmt_public
from bench.common import alternating, table
from tests.unit.vectors.attest import load


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()

    ek_der, ek_public_bytes = load.raw("ek-ecc.der"), load.raw("ek-ecc.pub")
    intermediate, root = load.certificate("intermediate.pem"), load.certificate("root.pem")
    vector = load.certify_vector("ecc")
    now = load.now()
    csr = x509.load_der_x509_csr(vector["csr"])
    secret = os.urandom(32)

    def ours(_: int) -> None:
        verified_ek = verify_ek_certificate(ek_der, intermediates=[intermediate], roots=[root], now=now)
        ek_public = parse_tpm2b_public(ek_public_bytes)
        check_ek_matches(verified_ek, ek_public)
        ak = check_attestation_key(parse_tpmt_public(vector["ak_public"]))
        make_credential(ek_public, ak.name, secret)
        request = x509.load_der_x509_csr(vector["csr"])
        if not request.is_signature_valid:
            raise ValueError("bad CSR")
        verify_certify(
            vector["attest"],
            vector["signature"],
            ak=ak,
            qualifying_data=vector["nonce"],
            identity=parse_tpmt_public(vector["identity_public"]),
            csr_public_key=request.public_key(),
        )

    ek_cert = x509.load_der_x509_certificate(ek_der)
    ek_key = ek_cert.public_key()
    ak_key = parse_tpmt_public(vector["ak_public"]).public_key()
    signature = parse_tpmt_signature(vector["signature"])
    assert isinstance(signature, EcdsaSignature) and isinstance(ak_key, ec.EllipticCurvePublicKey)
    assert isinstance(ek_key, ec.EllipticCurvePublicKey)
    der_signature = encode_dss_signature(
        int.from_bytes(signature.r, "big"), int.from_bytes(signature.s, "big")
    )

    def raw(_: int) -> None:
        ek_cert.verify_directly_issued_by(intermediate)
        intermediate.verify_directly_issued_by(root)
        ec.generate_private_key(ek_key.curve).exchange(ec.ECDH(), ek_key)
        ak_key.verify(der_signature, vector["attest"], ec.ECDSA(hashes.SHA256()))
        if not csr.is_signature_valid:
            raise ValueError("bad CSR")

    base, mine = alternating(raw, ours, args.n)
    print(
        table(
            [
                ("raw crypto operations per enrollment", f"{base:,.0f} /s ({1e6 / base:.0f} µs)"),
                ("weighstation enrollment checks", f"{mine:,.0f} /s ({1e6 / mine:.0f} µs)"),
                ("ratio", f"{mine / base:.2f}x"),
            ]
        )
    )


if __name__ == "__main__":
    main()
