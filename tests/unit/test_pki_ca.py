from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from pki.ca import Issuer, build_issuing_ca
from pki.errors import IssuerExpired
from pki.signer import KeyAlgorithm
from tests.unit.pki_helpers import ISSUING_SERIAL, NOW, ROOT_SERIAL, TRUST_DOMAIN, make_ca


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.EC_P256, KeyAlgorithm.EC_P384, KeyAlgorithm.ED25519])
def test_root_and_issuing_ca_shape(tmp_path: Path, algorithm: KeyAlgorithm) -> None:
    ca = make_ca(tmp_path, algorithm)
    root, issuing = ca.root.certificate, ca.issuing.certificate

    assert root.serial_number == ROOT_SERIAL
    assert root.issuer == root.subject
    assert root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "weighstation"
    root.verify_directly_issued_by(root)
    root_bc = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert root_bc.critical and root_bc.value.ca
    root_ku = root.extensions.get_extension_for_class(x509.KeyUsage)
    assert root_ku.critical and root_ku.value.key_cert_sign and root_ku.value.crl_sign
    assert not root_ku.value.digital_signature

    assert issuing.serial_number == ISSUING_SERIAL
    issuing.verify_directly_issued_by(root)
    bc = issuing.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = issuing.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and ku.value.digital_signature
    nc = issuing.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical
    assert nc.value.permitted_subtrees == [x509.UniformResourceIdentifier(TRUST_DOMAIN)]
    aki = issuing.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest


def test_issuing_ca_never_outlives_root(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    longer = build_issuing_ca(
        ca.root,
        ca.issuing.signer.public_key(),
        common_name="long",
        trust_domain=TRUST_DOMAIN,
        now=NOW,
        ttl=timedelta(days=20 * 365),
        serial=7,
    )
    assert longer.not_valid_after_utc == ca.root.certificate.not_valid_after_utc


def test_issuing_ca_from_expired_root_is_refused(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    with pytest.raises(IssuerExpired):
        build_issuing_ca(
            ca.root,
            ca.issuing.signer.public_key(),
            common_name="late",
            trust_domain=TRUST_DOMAIN,
            now=NOW + timedelta(days=3651),
            ttl=timedelta(days=365),
            serial=8,
        )


def test_issuer_caches_its_key_identifier(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    issuer = Issuer(certificate=ca.issuing.certificate, signer=ca.issuing.signer, chain=ca.issuing.chain)
    assert issuer.authority_key_identifier is issuer.authority_key_identifier
