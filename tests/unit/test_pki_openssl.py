"""Interop with the real openssl binary: path validation, name constraints, CRL and OCSP."""

from __future__ import annotations

import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp

from pki.ocsp import CertStatus, build_ocsp_response, issuer_matches, parse_ocsp_request
from pki.revocation import RevocationReason, RevokedEntry, build_crl
from tests.unit.pki_helpers import NOW, CaPair, issue_truck, make_ca, p256, truck_uri, write_pem


@pytest.fixture(autouse=True)
def _openssl_present() -> None:
    # A missing openssl must fail these tests, never skip them: they are the interop evidence.
    assert shutil.which("openssl"), "the openssl binary is required (make test installs it)"


AT = str(int((NOW + timedelta(hours=1)).timestamp()))
# The fixed NOW lies in the past; openssl compares OCSP thisUpdate/nextUpdate with the wall clock.
VALIDITY_SLACK = str(20 * 365 * 24 * 3600)


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", *map(str, args)], capture_output=True, text=True, timeout=30, check=False
    )


@pytest.fixture
def ca(tmp_path: Path) -> CaPair:
    return make_ca(tmp_path)


def test_openssl_verifies_issued_truck_chain(ca: CaPair, tmp_path: Path) -> None:
    root = write_pem(tmp_path / "root.pem", ca.root.certificate)
    issuing = write_pem(tmp_path / "issuing.pem", ca.issuing.certificate)
    leaf = write_pem(tmp_path / "leaf.pem", issue_truck(ca))
    result = openssl(
        "verify", "-attime", AT, "-purpose", "sslclient", "-CAfile", root, "-untrusted", issuing, leaf
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "OK" in result.stdout


def test_openssl_rejects_forged_uri_outside_trust_domain(ca: CaPair, tmp_path: Path) -> None:
    # Forged by signing directly with the issuing key, bypassing profile checks: only the
    # issuing CA's name constraint stands between this certificate and a relying party.
    key = p256()
    issuing = ca.issuing
    forged = (
        x509.CertificateBuilder()
        .issuer_name(issuing.certificate.subject)
        .subject_name(x509.Name([]))
        .public_key(key.public_key())
        .serial_number(0x4004)
        .not_valid_before(NOW - timedelta(minutes=1))
        .not_valid_after(NOW + timedelta(hours=24))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(truck_uri(domain="evil.test"))]),
            critical=True,
        )
        .add_extension(issuing.authority_key_identifier, critical=False)
        .sign(issuing.signer.private_key(), issuing.signer.algorithm.signing_hash())
    )
    root = write_pem(tmp_path / "root.pem", ca.root.certificate)
    chain = write_pem(tmp_path / "issuing.pem", issuing.certificate)
    leaf = write_pem(tmp_path / "forged.pem", forged)
    result = openssl("verify", "-attime", AT, "-CAfile", root, "-untrusted", chain, leaf)
    assert result.returncode != 0
    # X509_V_ERR_PERMITTED_VIOLATION: the name-constraints check, not some other failure.
    assert "permitted subtree violation" in result.stderr + result.stdout


def test_openssl_verifies_crl_signature(ca: CaPair, tmp_path: Path) -> None:
    crl = build_crl(
        ca.issuing,
        [RevokedEntry(serial=0x3003, revoked_at=NOW, reason=RevocationReason.KEY_COMPROMISE)],
        crl_number=1,
        now=NOW,
        next_update=timedelta(hours=24),
    )
    crl_path = tmp_path / "crl.der"
    crl_path.write_bytes(crl.public_bytes(serialization.Encoding.DER))
    bundle = write_pem(tmp_path / "bundle.pem", ca.root.certificate, ca.issuing.certificate)
    result = openssl("crl", "-inform", "DER", "-in", crl_path, "-CAfile", bundle, "-noout", "-text")
    assert result.returncode == 0, result.stderr
    assert "verify OK" in result.stderr + result.stdout
    assert "Key Compromise" in result.stdout


def test_openssl_ocsp_round_trip_good_then_revoked(ca: CaPair, tmp_path: Path) -> None:
    issuing = write_pem(tmp_path / "issuing.pem", ca.issuing.certificate)
    bundle = write_pem(tmp_path / "bundle.pem", ca.root.certificate, ca.issuing.certificate)
    leaf_cert = issue_truck(ca)
    leaf = write_pem(tmp_path / "leaf.pem", leaf_cert)
    request_path = tmp_path / "req.der"
    made = openssl("ocsp", "-issuer", issuing, "-cert", leaf, "-reqout", request_path)
    assert made.returncode == 0, made.stderr

    query = parse_ocsp_request(request_path.read_bytes())
    assert query.serial == leaf_cert.serial_number
    assert query.nonce is not None  # openssl adds one by default; the response must echo it
    assert issuer_matches(query, ca.issuing)

    outcomes = {
        "good": build_ocsp_response(ca.issuing, query, CertStatus.GOOD, now=NOW, validity=timedelta(hours=1)),
        "revoked": build_ocsp_response(
            ca.issuing,
            query,
            CertStatus.REVOKED,
            now=NOW,
            validity=timedelta(hours=1),
            revoked_at=NOW,
            reason=RevocationReason.KEY_COMPROMISE,
        ),
    }
    for expected, response in outcomes.items():
        response_path = tmp_path / f"resp-{expected}.der"
        response_path.write_bytes(response)
        checked = openssl(
            "ocsp",
            "-respin", response_path,
            "-no_nonce",  # openssl would otherwise compare against a fresh request's nonce
            "-issuer", issuing,
            "-CAfile", bundle,
            "-cert", leaf,
            "-attime", AT,
            "-validity_period", VALIDITY_SLACK,
        )  # fmt: skip
        assert checked.returncode == 0, checked.stderr
        assert "Response verify OK" in checked.stderr + checked.stdout
        assert f"leaf.pem: {expected}" in checked.stdout
        parsed = ocsp.load_der_ocsp_response(response)
        assert parsed.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == query.nonce
