from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from pki.errors import IssuerExpired, ProfileViolation
from pki.issue import IssuerUrls, issue_certificate, renewal_request
from pki.profiles import parse_csr, profile_for, validate_request
from pki.signer import KeyAlgorithm
from tests.unit.pki_helpers import (
    LEAF_SERIAL,
    NOW,
    TRUST_DOMAIN,
    URLS,
    CaPair,
    issue_truck,
    make_ca,
    make_csr,
    truck_uri,
)


@pytest.fixture
def ca(tmp_path: Path) -> CaPair:
    return make_ca(tmp_path)


def test_truck_certificate_contents(ca: CaPair) -> None:
    cert = issue_truck(ca)
    cert.verify_directly_issued_by(ca.issuing.certificate)
    assert cert.serial_number == LEAF_SERIAL
    assert cert.issuer == ca.issuing.certificate.subject
    assert cert.not_valid_before_utc == NOW - timedelta(seconds=60)
    assert cert.not_valid_after_utc == NOW + timedelta(hours=24)
    ext = cert.extensions
    bc = ext.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = ext.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_encipherment
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    san = ext.get_extension_for_class(x509.SubjectAlternativeName)
    assert not san.critical
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [truck_uri()]
    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca.issuing.subject_key_identifier.digest
    crl_dp = ext.get_extension_for_class(x509.CRLDistributionPoints).value
    assert crl_dp[0].full_name == [x509.UniformResourceIdentifier(URLS.crl_url or "")]
    (access,) = ext.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert access.access_method == AuthorityInformationAccessOID.OCSP


def test_no_urls_means_no_revocation_pointers(ca: CaPair) -> None:
    cert = issue_truck(ca, urls=None)
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    cert = issue_truck(ca, urls=IssuerUrls(ocsp_url="https://ca.fleet.test/ocsp"))
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess)


def test_service_rsa_key_gets_key_encipherment(ca: CaPair) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = parse_csr(make_csr(key, dns=["api.fleet.test"]))
    request = validate_request(profile_for("service"), csr, trust_domain=TRUST_DOMAIN)
    cert = issue_certificate(ca.issuing, request, now=NOW, serial=5)
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment
    eku = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert eku == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


def test_evidence_certificate_is_code_signing(ca: CaPair) -> None:
    csr = parse_csr(make_csr(uris=[truck_uri()]))
    request = validate_request(profile_for("evidence"), csr, trust_domain=TRUST_DOMAIN)
    cert = issue_certificate(ca.issuing, request, now=NOW, serial=6)
    eku = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert eku == [ExtendedKeyUsageOID.CODE_SIGNING]


def test_empty_subject_makes_san_critical(ca: CaPair) -> None:
    long_name = ".".join(["a" * 20] * 4) + ".test"  # > 64 chars: cannot be a CN
    csr = parse_csr(make_csr(dns=[long_name]))
    request = validate_request(profile_for("service"), csr, trust_domain=TRUST_DOMAIN)
    cert = issue_certificate(ca.issuing, request, now=NOW, serial=9)
    assert len(cert.subject) == 0
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical


def test_leaf_is_clamped_to_issuer_expiry(ca: CaPair) -> None:
    late = ca.issuing.certificate.not_valid_after_utc - timedelta(hours=1)
    csr = parse_csr(make_csr(uris=[truck_uri()]))
    request = validate_request(profile_for("truck"), csr, trust_domain=TRUST_DOMAIN)
    cert = issue_certificate(ca.issuing, request, now=late, serial=10)
    assert cert.not_valid_after_utc == ca.issuing.certificate.not_valid_after_utc


def test_issuing_after_issuer_expiry(ca: CaPair) -> None:
    after = ca.issuing.certificate.not_valid_after_utc + timedelta(seconds=1)
    csr = parse_csr(make_csr(uris=[truck_uri()]))
    request = validate_request(profile_for("truck"), csr, trust_domain=TRUST_DOMAIN)
    with pytest.raises(IssuerExpired):
        issue_certificate(ca.issuing, request, now=after, serial=11)


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.EC_P384, KeyAlgorithm.ED25519])
def test_issue_with_other_ca_algorithms(tmp_path: Path, algorithm: KeyAlgorithm) -> None:
    ca = make_ca(tmp_path, algorithm)
    cert = issue_truck(ca)
    cert.verify_directly_issued_by(ca.issuing.certificate)


def test_renewal_keeps_sans_and_takes_new_key(ca: CaPair) -> None:
    old = issue_truck(ca, uri=truck_uri(truck="t-042"))
    new_key = ec.generate_private_key(ec.SECP384R1())
    csr = parse_csr(make_csr(new_key, uris=[truck_uri(truck="someone-else")]))
    request = renewal_request(old, profile_for("truck"), csr, trust_domain=TRUST_DOMAIN, ttl=None)
    assert request.uri_sans == (truck_uri(truck="t-042"),)
    assert request.public_key == new_key.public_key()
    renewed = issue_certificate(ca.issuing, request, now=NOW + timedelta(hours=20), serial=12)
    assert renewed.subject == old.subject


def test_renewal_of_certificate_without_san(ca: CaPair) -> None:
    bare = ca.issuing.certificate  # a CA certificate carries no SAN
    csr = parse_csr(make_csr(uris=[truck_uri()]))
    with pytest.raises(ProfileViolation, match="no SAN"):
        renewal_request(bare, profile_for("truck"), csr, trust_domain=TRUST_DOMAIN, ttl=None)
