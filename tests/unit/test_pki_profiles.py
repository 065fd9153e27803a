from __future__ import annotations

import ipaddress
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from pki.errors import (
    CsrSignatureInvalid,
    KeyNotAllowed,
    MalformedCsr,
    ProfileViolation,
    SanOutsideTrustDomain,
    TtlTooLong,
    UnknownProfile,
)
from pki.profiles import ProfileName, ValidatedRequest, parse_csr, profile_for, validate_request
from tests.unit.pki_helpers import TRUST_DOMAIN, CsrKey, make_csr, make_csr_obj, truck_uri


def validate(
    profile: str,
    key: CsrKey | None = None,
    *,
    uris: tuple[str, ...] = (),
    dns: tuple[str, ...] = (),
    ttl: timedelta | None = None,
) -> ValidatedRequest:
    csr = parse_csr(make_csr(key, uris=uris, dns=dns))
    return validate_request(profile_for(profile), csr, trust_domain=TRUST_DOMAIN, ttl=ttl)


# -- parse_csr ---------------------------------------------------------------------------------


def test_parse_csr_accepts_pem_and_der() -> None:
    csr = make_csr_obj(uris=[truck_uri()])
    assert parse_csr(csr.public_bytes(serialization.Encoding.PEM)) == csr
    assert parse_csr(csr.public_bytes(serialization.Encoding.DER)) == csr


def test_malformed_csr() -> None:
    with pytest.raises(MalformedCsr):
        parse_csr(b"not a certificate request")


def test_csr_der_with_trailing_junk() -> None:
    with pytest.raises(MalformedCsr):
        parse_csr(make_csr_obj().public_bytes(serialization.Encoding.DER) + b"\x00")


def test_csr_pem_with_trailing_junk() -> None:
    with pytest.raises(MalformedCsr):
        parse_csr(make_csr() + b"junk\n")


def test_csr_with_bad_signature() -> None:
    der = bytearray(make_csr_obj(uris=[truck_uri()]).public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature BIT STRING, the last field of the CSR
    with pytest.raises(CsrSignatureInvalid):
        parse_csr(bytes(der))


# -- keys --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP384R1())],
    ids=["p256", "p384"],
)
def test_truck_accepts_ec_keys(key: ec.EllipticCurvePrivateKey) -> None:
    assert validate("truck", key, uris=(truck_uri(),)).public_key == key.public_key()


def test_truck_accepts_rsa_2048() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert validate("truck", key, uris=(truck_uri(),)).public_key == key.public_key()


def test_rsa_1024_key() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(KeyNotAllowed, match="RSA-1024"):
        validate("service", key, dns=("api.fleet.test",))


def test_p521_key() -> None:
    with pytest.raises(KeyNotAllowed, match="secp521r1"):
        validate("truck", ec.generate_private_key(ec.SECP521R1()), uris=(truck_uri(),))


def test_ed25519_key_in_truck_profile() -> None:
    with pytest.raises(KeyNotAllowed, match="ed25519"):
        validate("truck", ed25519.Ed25519PrivateKey.generate(), uris=(truck_uri(),))


def test_ed25519_key_in_service_profile_is_fine() -> None:
    request = validate("service", ed25519.Ed25519PrivateKey.generate(), dns=("api.fleet.test",))
    assert isinstance(request.public_key, ed25519.Ed25519PublicKey)
    assert request.dns_sans == ("api.fleet.test",)


def test_ed448_key() -> None:
    with pytest.raises(KeyNotAllowed, match="Ed448"):
        validate("service", ed448.Ed448PrivateKey.generate(), dns=("api.fleet.test",))


def test_dsa_key() -> None:
    with pytest.raises(KeyNotAllowed, match="DSA"):
        validate("service", dsa.generate_private_key(2048), dns=("api.fleet.test",))


def test_p384_key_in_evidence_profile() -> None:
    with pytest.raises(KeyNotAllowed, match="evidence"):
        validate("evidence", ec.generate_private_key(ec.SECP384R1()), uris=(truck_uri(),))


# -- SANs --------------------------------------------------------------------------------------


def test_truck_request_subject_is_built_not_copied() -> None:
    request = validate("truck", uris=(truck_uri(truck="T-9.a_b"),))
    assert request.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "T-9.a_b")])
    assert request.uri_sans == (truck_uri(truck="T-9.a_b"),)
    assert request.dns_sans == ()
    assert request.ttl == timedelta(hours=24)


def test_caller_sans_override_csr_sans() -> None:
    csr = parse_csr(make_csr(uris=[truck_uri(truck="from-csr")]))
    request = validate_request(
        profile_for("truck"), csr, trust_domain=TRUST_DOMAIN, uri_sans=[truck_uri(truck="from-caller")]
    )
    assert request.uri_sans == (truck_uri(truck="from-caller"),)


def test_san_host_outside_trust_domain() -> None:
    with pytest.raises(SanOutsideTrustDomain):
        validate("truck", uris=(truck_uri(domain="evil.test"),))


@pytest.mark.parametrize(
    "uri",
    [
        f"spiffe://{TRUST_DOMAIN}/fleet/north/trucks/t-001",
        f"spiffe://{TRUST_DOMAIN}/fleet/north/truck/t-001/extra",
        f"spiffe://{TRUST_DOMAIN}/fleet/north/truck/-bad",
        f"spiffe://{TRUST_DOMAIN}/fleet/north/truck/{'a' * 65}",
    ],
)
def test_san_path_shape_wrong(uri: str) -> None:
    with pytest.raises(ProfileViolation) as caught:
        validate("truck", uris=(uri,))
    assert not isinstance(caught.value, SanOutsideTrustDomain)


@pytest.mark.parametrize(
    "uri",
    [
        f"https://{TRUST_DOMAIN}/fleet/north/truck/t-001",
        f"spiffe://{TRUST_DOMAIN}/fleet/north/truck/t-001?x=1",
        f"spiffe://{TRUST_DOMAIN}/fleet/north/truck/t-001#frag",
        f"spiffe://user@{TRUST_DOMAIN}/fleet/north/truck/t-001",
        f"spiffe://{TRUST_DOMAIN}:443/fleet/north/truck/t-001",
        f"spiffe://{TRUST_DOMAIN}/fleet/../truck/t-001",
        f"spiffe://{TRUST_DOMAIN}/fleet//north/truck/t-001",
        f"spiffe://{TRUST_DOMAIN}/fleet/north/truck/t-001/",
        f"spiffe://{TRUST_DOMAIN}/fleet/n%2e/truck/t-001",
    ],
    ids=["scheme", "query", "fragment", "userinfo", "port", "dotdot", "empty-segment", "trailing", "pct"],
)
def test_san_uri_shape_problems(uri: str) -> None:
    with pytest.raises(ProfileViolation) as caught:
        validate("truck", uris=(uri,))
    assert not isinstance(caught.value, SanOutsideTrustDomain)


def test_dns_san_in_truck_profile() -> None:
    with pytest.raises(ProfileViolation, match="DNS"):
        validate("truck", uris=(truck_uri(),), dns=("t-001.fleet.test",))


def test_two_uri_sans_in_truck_profile() -> None:
    with pytest.raises(ProfileViolation, match="exactly one"):
        validate("truck", uris=(truck_uri(), truck_uri(truck="t-002")))


def test_no_san_in_truck_profile() -> None:
    with pytest.raises(ProfileViolation):
        validate("truck")


def test_service_profile_with_spiffe_and_dns() -> None:
    uri = f"spiffe://{TRUST_DOMAIN}/svc/gateway"
    request = validate("service", uris=(uri,), dns=("gw.fleet.test", "gw.internal"))
    assert request.profile.name is ProfileName.SERVICE
    assert request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gw.fleet.test"
    assert request.ttl == timedelta(days=30)


def test_service_subject_falls_back_to_spiffe_path() -> None:
    request = validate("service", uris=(f"spiffe://{TRUST_DOMAIN}/svc/gateway",))
    assert request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "/svc/gateway"


def test_service_without_sans() -> None:
    with pytest.raises(ProfileViolation, match="at least one"):
        validate("service")


def test_service_with_two_uri_sans() -> None:
    with pytest.raises(ProfileViolation, match="at most one"):
        validate("service", uris=(f"spiffe://{TRUST_DOMAIN}/a", f"spiffe://{TRUST_DOMAIN}/b"))


@pytest.mark.parametrize(
    "name",
    ["*.fleet.test", "10.0.0.1", "a..fleet.test", "fleet.test.", "-a.fleet.test", "a" * 64 + ".test",
     ".".join(["abcdefghi"] * 26), "under_score.test", "::1"],
    ids=["wildcard", "ipv4", "empty-label", "trailing-dot", "hyphen", "long-label", "too-long", "underscore",
         "ipv6"],
)  # fmt: skip
def test_service_dns_san_invalid(name: str) -> None:
    with pytest.raises(ProfileViolation):
        validate("service", dns=(name,))


def test_csr_with_ip_san_is_refused() -> None:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("10.0.0.1"))]), critical=False
        )
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    )
    with pytest.raises(ProfileViolation, match="IPAddress"):
        validate_request(profile_for("service"), csr, trust_domain=TRUST_DOMAIN)


def test_evidence_profile() -> None:
    request = validate("evidence", uris=(truck_uri(),))
    assert request.profile.name is ProfileName.EVIDENCE
    assert request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "t-001"


# -- TTL and profile names -----------------------------------------------------------------------


def test_ttl_above_max() -> None:
    with pytest.raises(TtlTooLong):
        validate("truck", uris=(truck_uri(),), ttl=timedelta(days=7, seconds=1))


def test_ttl_at_max_is_fine() -> None:
    assert validate("service", dns=("a.fleet.test",), ttl=timedelta(days=90)).ttl == timedelta(days=90)


def test_ttl_zero() -> None:
    with pytest.raises(ProfileViolation, match="positive"):
        validate("truck", uris=(truck_uri(),), ttl=timedelta(0))


def test_unknown_profile() -> None:
    with pytest.raises(UnknownProfile):
        profile_for("root")


def test_truck_default_ttl_is_configurable() -> None:
    profile = profile_for("truck", truck_default_ttl=timedelta(hours=6))
    assert profile.default_ttl == timedelta(hours=6)
    assert profile.max_ttl == timedelta(days=7)
    with pytest.raises(ValueError, match="truck default TTL"):
        profile_for("truck", truck_default_ttl=timedelta(days=8))
