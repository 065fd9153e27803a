"""attest.ek on the recorded EK certificates and on small synthetic chains for the CA rules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

from attest.ek import VerifiedEk, check_ek_matches, verify_ek_certificate
from attest.errors import (
    EkCertificateExpired,
    EkCertificateNotYetValid,
    EkChainUntrusted,
    EkIssuerNotCa,
    EkKeyMismatch,
    EkLeafIsCa,
    EkUnhandledCriticalExtension,
    MalformedEkCertificate,
)
from attest.public import parse_tpm2b_public
from tests.unit.vectors.attest.load import certificate, now, raw

KINDS = ["rsa", "ecc"]


def verify_recorded(der: bytes, *, at: datetime | None = None, with_intermediate: bool = True) -> object:
    return verify_ek_certificate(
        der,
        intermediates=[certificate("intermediate.pem")] if with_intermediate else [],
        roots=[certificate("root.pem")],
        now=at or now(),
    )


@pytest.mark.parametrize("kind", KINDS)
def test_recorded_ek_certificate_verifies(kind: str) -> None:
    verified = verify_ek_certificate(
        raw(f"ek-{kind}.der"),
        intermediates=[certificate("intermediate.pem")],
        roots=[certificate("root.pem")],
        now=now(),
    )
    assert verified.chain == (
        certificate(f"ek-{kind}.der"),
        certificate("intermediate.pem"),
        certificate("root.pem"),
    )
    check_ek_matches(verified, parse_tpm2b_public(raw(f"ek-{kind}.pub")))


@pytest.mark.parametrize("kind", KINDS)
def test_ek_public_of_the_other_ek_mismatches(kind: str) -> None:
    verified = verify_ek_certificate(
        raw(f"ek-{kind}.der"),
        intermediates=[certificate("intermediate.pem")],
        roots=[certificate("root.pem")],
        now=now(),
    )
    other = "ecc" if kind == "rsa" else "rsa"
    with pytest.raises(EkKeyMismatch) as caught:
        check_ek_matches(verified, parse_tpm2b_public(raw(f"ek-{other}.pub")))
    assert caught.value.code == "ek-key-mismatch"


@pytest.mark.parametrize("kind", KINDS)
def test_ek_cert_with_flipped_signature_byte(kind: str) -> None:
    der = bytearray(raw(f"ek-{kind}.der"))
    # The signature BIT STRING ends the certificate; for ECDSA the last byte is inside s.
    der[-1] ^= 0x01
    with pytest.raises(EkChainUntrusted):
        verify_recorded(bytes(der))


@pytest.mark.parametrize("kind", KINDS)
def test_ek_cert_without_the_intermediate(kind: str) -> None:
    with pytest.raises(EkChainUntrusted):
        verify_recorded(raw(f"ek-{kind}.der"), with_intermediate=False)


def test_ek_cert_with_root_only_offered_as_intermediate() -> None:
    with pytest.raises(EkChainUntrusted):
        verify_ek_certificate(
            raw("ek-ecc.der"),
            intermediates=[certificate("intermediate.pem"), certificate("root.pem")],
            roots=[],
            now=now(),
        )


def test_ek_cert_expired() -> None:
    leaf = certificate("ek-ecc.der")
    end = min(leaf.not_valid_after_utc, certificate("intermediate.pem").not_valid_after_utc)
    with pytest.raises(EkCertificateExpired):
        verify_recorded(raw("ek-ecc.der"), at=end + timedelta(seconds=1))


def test_ek_cert_not_yet_valid() -> None:
    with pytest.raises(EkCertificateNotYetValid):
        verify_recorded(
            raw("ek-ecc.der"), at=certificate("ek-ecc.der").not_valid_before_utc - timedelta(seconds=1)
        )


def test_ek_cert_not_der() -> None:
    with pytest.raises(MalformedEkCertificate) as caught:
        verify_recorded(raw("ek-ecc.der")[:-10])
    assert caught.value.kind == "invalid"


def test_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone"):
        verify_recorded(raw("ek-ecc.der"), at=datetime(2030, 1, 1))


# --- synthetic chains for the CA rules ------------------------------------------------------

T0 = datetime(2030, 1, 1, tzinfo=UTC)
CERT_SIGN = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
KEY_AGREEMENT = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=True,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def issue(
    cn: str,
    issuer: Issued | None,
    *,
    ca: bool | None,
    path_length: int | None = None,
    usage: x509.KeyUsage | None = CERT_SIGN,
    extra: Sequence[tuple[x509.ExtensionType, bool]] = (),
    key: ec.EllipticCurvePrivateKey | None = None,
) -> Issued:
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0)
        .not_valid_after(T0 + timedelta(days=365))
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
    if usage is not None:
        builder = builder.add_extension(usage, critical=True)
    for ext, critical in extra:
        builder = builder.add_extension(ext, critical=critical)
    signer = issuer.key if issuer else key
    return Issued(builder.sign(signer, hashes.SHA256()), key)


def der(issued: Issued) -> bytes:
    return issued.cert.public_bytes(serialization.Encoding.DER)


def verify_synthetic(leaf: Issued, intermediates: Sequence[Issued], root: Issued) -> VerifiedEk:
    return verify_ek_certificate(
        der(leaf),
        intermediates=[i.cert for i in intermediates],
        roots=[root.cert],
        now=T0 + timedelta(days=1),
    )


def test_synthetic_two_level_chain_verifies() -> None:
    root = issue("root", None, ca=True)
    inter = issue("inter", root, ca=True, path_length=0)
    leaf = issue("ek", inter, ca=False, usage=KEY_AGREEMENT)
    verified = verify_synthetic(leaf, [inter], root)
    assert verified.chain == (leaf.cert, inter.cert, root.cert)


def test_issuer_without_ca_true() -> None:
    root = issue("root", None, ca=True)
    inter = issue("inter", root, ca=False)
    leaf = issue("ek", inter, ca=False, usage=KEY_AGREEMENT)
    with pytest.raises(EkIssuerNotCa, match="CA:true"):
        verify_synthetic(leaf, [inter], root)


def test_issuer_without_basic_constraints() -> None:
    root = issue("root", None, ca=True)
    inter = issue("inter", root, ca=None)
    leaf = issue("ek", inter, ca=False, usage=KEY_AGREEMENT)
    with pytest.raises(EkIssuerNotCa):
        verify_synthetic(leaf, [inter], root)


def test_issuer_without_key_cert_sign() -> None:
    root = issue("root", None, ca=True)
    inter = issue("inter", root, ca=True, usage=KEY_AGREEMENT)
    leaf = issue("ek", inter, ca=False, usage=KEY_AGREEMENT)
    with pytest.raises(EkIssuerNotCa, match="keyCertSign"):
        verify_synthetic(leaf, [inter], root)


def test_issuer_without_key_usage() -> None:
    root = issue("root", None, ca=True)
    inter = issue("inter", root, ca=True, usage=None)
    leaf = issue("ek", inter, ca=False, usage=KEY_AGREEMENT)
    with pytest.raises(EkIssuerNotCa, match="keyUsage"):
        verify_synthetic(leaf, [inter], root)


def test_path_length_exceeded() -> None:
    root = issue("root", None, ca=True)
    inter1 = issue("inter1", root, ca=True, path_length=0)
    inter2 = issue("inter2", inter1, ca=True, path_length=0)
    leaf = issue("ek", inter2, ca=False, usage=KEY_AGREEMENT)
    with pytest.raises(EkIssuerNotCa, match="pathLen"):
        verify_synthetic(leaf, [inter1, inter2], root)


def test_path_length_respected() -> None:
    root = issue("root", None, ca=True, path_length=2)
    inter1 = issue("inter1", root, ca=True, path_length=1)
    inter2 = issue("inter2", inter1, ca=True, path_length=0)
    leaf = issue("ek", inter2, ca=False, usage=KEY_AGREEMENT)
    verified = verify_synthetic(leaf, [inter2, inter1], root)
    assert verified.chain == (leaf.cert, inter2.cert, inter1.cert, root.cert)


def test_leaf_is_ca() -> None:
    root = issue("root", None, ca=True)
    inter = issue("inter", root, ca=True, path_length=0)
    leaf = issue("ek", inter, ca=True, path_length=0)
    with pytest.raises(EkLeafIsCa):
        verify_synthetic(leaf, [inter], root)


def test_unhandled_critical_extension() -> None:
    root = issue("root", None, ca=True)
    inter = issue("inter", root, ca=True, path_length=0)
    odd = x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
    leaf = issue("ek", inter, ca=False, usage=KEY_AGREEMENT, extra=[(odd, True)])
    with pytest.raises(EkUnhandledCriticalExtension):
        verify_synthetic(leaf, [inter], root)


def test_lookalike_root_is_untrusted() -> None:
    # Same subject name, different key: the signature path fails before any DER comparison.
    root = issue("root", None, ca=True)
    lookalike = issue("root", None, ca=True)
    inter = issue("inter", root, ca=True, path_length=0)
    leaf = issue("ek", inter, ca=False, usage=KEY_AGREEMENT)
    with pytest.raises(EkChainUntrusted):
        verify_synthetic(leaf, [inter], lookalike)


def test_chain_after_validity_is_expired() -> None:
    root = issue("root", None, ca=True)
    inter = issue("inter", root, ca=True, path_length=0)
    leaf = issue("ek", inter, ca=False, usage=KEY_AGREEMENT)
    with pytest.raises(EkCertificateExpired):
        verify_ek_certificate(
            der(leaf), intermediates=[inter.cert], roots=[root.cert], now=T0 + timedelta(days=400)
        )


def test_a_failing_path_does_not_hide_a_passing_one() -> None:
    # Two certificates for one intermediate key and name: the first offered is not a CA.
    root = issue("root", None, ca=True)
    good = issue("inter", root, ca=True, path_length=0)
    bad = issue("inter", root, ca=False, key=good.key)
    leaf = issue("ek", good, ca=False, usage=KEY_AGREEMENT)
    verified = verify_ek_certificate(
        der(leaf), intermediates=[bad.cert, good.cert], roots=[root.cert], now=T0
    )
    assert verified.chain[1] == good.cert
    with pytest.raises(EkIssuerNotCa):
        verify_ek_certificate(der(leaf), intermediates=[bad.cert], roots=[root.cert], now=T0)
