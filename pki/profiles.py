"""Certificate profiles (truck, service, evidence) and CSR validation against them.

A request is checked in this order: (1) CSR parse and self-signature, (2) key type and size,
(3) SAN shape and trust domain, (4) TTL. The certificate subject is always built here, never
copied from the CSR.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from functools import cached_property

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPublicKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pki.errors import (
    CsrSignatureInvalid,
    KeyNotAllowed,
    MalformedCsr,
    ProfileViolation,
    TtlTooLong,
    UnknownProfile,
)
from pki.names import check_dns_name, check_trust_domain, parse_spiffe_id, parse_truck_id

_MAX_CSR_BYTES = 64 * 1024
_MIN_RSA_BITS = 2048
_MAX_RSA_BITS = 8192  # larger keys only make verification slow; no TPM or HSM produces them
_UB_COMMON_NAME = 64  # RFC 5280 ub-common-name
_PEM_CSR = re.compile(
    rb"\A\s*-----BEGIN (NEW )?CERTIFICATE REQUEST-----\r?\n"
    rb"[A-Za-z0-9+/=\r\n]+"
    rb"-----END (NEW )?CERTIFICATE REQUEST-----\s*\Z"
)


class ProfileName(StrEnum):
    TRUCK = "truck"
    SERVICE = "service"
    EVIDENCE = "evidence"


class KeyKind(StrEnum):
    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    RSA = "rsa"  # any size from 2048 to 8192 bits
    ED25519 = "ed25519"


class SanRule(StrEnum):
    TRUCK_ID = "truck-id"  # exactly one spiffe://<td>/fleet/<f>/truck/<t>, no DNS
    SERVICE = "service"  # ≥ 1 SAN: ≤ 1 SPIFFE ID in the trust domain plus DNS hostnames


@dataclass(frozen=True)
class Profile:
    name: ProfileName
    key_kinds: frozenset[KeyKind]
    extended_key_usage: tuple[x509.ObjectIdentifier, ...]
    default_ttl: timedelta
    max_ttl: timedelta
    san_rule: SanRule
    rsa_key_encipherment: bool = False  # TLS servers with RSA keys may still see RSA key transport

    @cached_property
    def eku_extension(self) -> x509.ExtendedKeyUsage:
        return x509.ExtendedKeyUsage(list(self.extended_key_usage))


def profile_for(name: str, *, truck_default_ttl: timedelta = timedelta(hours=24)) -> Profile:
    """The named profile; the truck default TTL is configurable up to the profile maximum."""
    try:
        profile_name = ProfileName(name)
    except ValueError:
        raise UnknownProfile(f"no certificate profile {name[:64]!r}") from None
    if profile_name is ProfileName.TRUCK:
        if not timedelta(0) < truck_default_ttl <= _TRUCK.max_ttl:
            raise ValueError(f"truck default TTL must be in (0, {_TRUCK.max_ttl}]")
        if truck_default_ttl == _TRUCK.default_ttl:
            return _TRUCK
        return Profile(
            name=_TRUCK.name,
            key_kinds=_TRUCK.key_kinds,
            extended_key_usage=_TRUCK.extended_key_usage,
            default_ttl=truck_default_ttl,
            max_ttl=_TRUCK.max_ttl,
            san_rule=_TRUCK.san_rule,
        )
    return _SERVICE if profile_name is ProfileName.SERVICE else _EVIDENCE


def parse_csr(data: bytes) -> x509.CertificateSigningRequest:
    """A PKCS#10 request in PEM or DER whose self-signature holds (proof of possession)."""
    if len(data) > _MAX_CSR_BYTES:
        raise MalformedCsr("CSR is larger than 64 KiB")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            # The strict match refuses text around the PEM block, which cryptography would skip.
            if not _PEM_CSR.match(data):
                raise MalformedCsr("CSR PEM has extra data or a wrong label")
            csr = x509.load_pem_x509_csr(data)
        else:
            csr = x509.load_der_x509_csr(data)
    except ValueError as exc:
        raise MalformedCsr(f"CSR does not parse: {exc}") from None
    try:
        valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CsrSignatureInvalid(f"CSR signature cannot be checked: {exc}") from None
    if not valid:
        raise CsrSignatureInvalid("CSR signature does not verify with its own public key")
    return csr


@dataclass(frozen=True)
class ValidatedRequest:
    profile: Profile
    public_key: CertificateIssuerPublicKeyTypes
    subject: x509.Name
    uri_sans: tuple[str, ...]
    dns_sans: tuple[str, ...]
    ttl: timedelta

    @cached_property
    def subject_key_identifier(self) -> x509.SubjectKeyIdentifier:
        return x509.SubjectKeyIdentifier.from_public_key(self.public_key)

    @cached_property
    def subject_alternative_name(self) -> x509.SubjectAlternativeName:
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in self.uri_sans]
        names += [x509.DNSName(d) for d in self.dns_sans]
        return x509.SubjectAlternativeName(names)


def validate_request(
    profile: Profile,
    csr: x509.CertificateSigningRequest,
    *,
    trust_domain: str,
    uri_sans: Sequence[str] | None = None,
    dns_sans: Sequence[str] | None = None,
    ttl: timedelta | None = None,
) -> ValidatedRequest:
    """Check a parsed CSR (and the caller's SANs, if any) against `profile`; build the subject."""
    check_trust_domain(trust_domain)
    # (2) key
    public_key = _check_key(profile, _csr_public_key(csr))
    # (3) SANs: the caller's, else those the CSR asks for
    if uri_sans is None and dns_sans is None:
        uris, dns = _csr_sans(csr)
    else:
        uris, dns = tuple(uri_sans or ()), tuple(dns_sans or ())
    subject = _check_sans(profile, trust_domain, uris, dns)
    # (4) TTL
    lifetime = profile.default_ttl if ttl is None else ttl
    if lifetime <= timedelta(0):
        raise ProfileViolation("TTL must be positive")
    if lifetime > profile.max_ttl:
        raise TtlTooLong(f"TTL {lifetime} exceeds the {profile.name} maximum of {profile.max_ttl}")
    return ValidatedRequest(
        profile=profile, public_key=public_key, subject=subject, uri_sans=uris, dns_sans=dns, ttl=lifetime
    )


def _csr_public_key(csr: x509.CertificateSigningRequest) -> CertificatePublicKeyTypes:
    try:
        return csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyNotAllowed(f"CSR key type is not supported: {exc}") from None


def _check_key(profile: Profile, key: CertificatePublicKeyTypes) -> CertificateIssuerPublicKeyTypes:
    kind: KeyKind
    checked: CertificateIssuerPublicKeyTypes
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = key.curve
        if isinstance(curve, ec.SECP256R1):
            kind = KeyKind.EC_P256
        elif isinstance(curve, ec.SECP384R1):
            kind = KeyKind.EC_P384
        else:
            raise KeyNotAllowed(f"EC curve {curve.name} is not allowed (P-256 or P-384 only)")
        checked = key
    elif isinstance(key, rsa.RSAPublicKey):
        bits = key.key_size
        if bits < _MIN_RSA_BITS or bits > _MAX_RSA_BITS:
            raise KeyNotAllowed(f"RSA-{bits} is not allowed (2048 to 8192 bits)")
        if key.public_numbers().e < 65537:
            raise KeyNotAllowed("RSA public exponent below 65537 is not allowed")
        kind, checked = KeyKind.RSA, key
    elif isinstance(key, ed25519.Ed25519PublicKey):
        kind, checked = KeyKind.ED25519, key
    else:
        raise KeyNotAllowed(f"{_key_label(key)} keys are not allowed")
    if kind not in profile.key_kinds:
        allowed = ", ".join(sorted(profile.key_kinds))
        raise KeyNotAllowed(f"{kind.value} keys are not allowed in the {profile.name} profile ({allowed})")
    return checked


def _key_label(key: CertificatePublicKeyTypes) -> str:
    if isinstance(key, dsa.DSAPublicKey):
        return f"DSA-{key.key_size}"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    if isinstance(key, (x25519.X25519PublicKey, x448.X448PublicKey)):
        return "key-agreement-only (X25519/X448)"
    return type(key).__name__


def _csr_sans(csr: x509.CertificateSigningRequest) -> tuple[tuple[str, ...], tuple[str, ...]]:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return (), ()
    except ValueError as exc:
        raise MalformedCsr(f"CSR extensions do not parse: {exc}") from None
    uris: list[str] = []
    dns: list[str] = []
    for name in san:
        if isinstance(name, x509.UniformResourceIdentifier):
            uris.append(name.value)
        elif isinstance(name, x509.DNSName):
            dns.append(name.value)
        else:
            raise ProfileViolation(f"SAN type {type(name).__name__} is not allowed")
    return tuple(uris), tuple(dns)


def _check_sans(
    profile: Profile, trust_domain: str, uris: tuple[str, ...], dns: tuple[str, ...]
) -> x509.Name:
    """Validate SANs for the profile's rule and return the subject we will put in the certificate."""
    if len(set(uris)) != len(uris) or len(set(dns)) != len(dns):
        raise ProfileViolation("duplicate SAN entries")
    if profile.san_rule is SanRule.TRUCK_ID:
        if dns:
            raise ProfileViolation(f"DNS SANs are not allowed in the {profile.name} profile")
        if len(uris) != 1:
            raise ProfileViolation(f"the {profile.name} profile needs exactly one URI SAN, got {len(uris)}")
        return _common_name(parse_truck_id(uris[0], trust_domain).truck)
    if not uris and not dns:
        raise ProfileViolation(f"the {profile.name} profile needs at least one SAN")
    if len(uris) > 1:
        raise ProfileViolation(f"the {profile.name} profile allows at most one URI SAN, got {len(uris)}")
    for name in dns:
        check_dns_name(name)
    candidates = list(dns)
    if uris:
        candidates.append(parse_spiffe_id(uris[0], trust_domain).path)
    for candidate in candidates:
        if len(candidate) <= _UB_COMMON_NAME:
            return _common_name(candidate)
    # Nothing fits a CN: an empty subject, and issuance marks the SAN critical (RFC 5280 §4.2.1.6).
    return x509.Name([])


def _common_name(value: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, value)])


_TRUCK = Profile(
    name=ProfileName.TRUCK,
    # TPM-resident identity keys are often RSA-2048; Ed25519 is not a TPM 2.0 algorithm.
    key_kinds=frozenset({KeyKind.EC_P256, KeyKind.EC_P384, KeyKind.RSA}),
    extended_key_usage=(ExtendedKeyUsageOID.CLIENT_AUTH,),
    default_ttl=timedelta(hours=24),
    max_ttl=timedelta(days=7),
    san_rule=SanRule.TRUCK_ID,
)
_SERVICE = Profile(
    name=ProfileName.SERVICE,
    key_kinds=frozenset({KeyKind.EC_P256, KeyKind.EC_P384, KeyKind.RSA, KeyKind.ED25519}),
    extended_key_usage=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
    default_ttl=timedelta(days=30),
    max_ttl=timedelta(days=90),
    san_rule=SanRule.SERVICE,
    rsa_key_encipherment=True,
)
_EVIDENCE = Profile(
    name=ProfileName.EVIDENCE,
    # Sigstore's hashedrekord verification expects ECDSA P-256 signing certificates.
    key_kinds=frozenset({KeyKind.EC_P256}),
    extended_key_usage=(ExtendedKeyUsageOID.CODE_SIGNING,),
    default_ttl=timedelta(hours=24),
    max_ttl=timedelta(days=7),
    san_rule=SanRule.TRUCK_ID,
)
