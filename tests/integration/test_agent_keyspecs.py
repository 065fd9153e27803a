"""Keys with non-standard attributes (agent.tpm.KeySpec) on a real swtpm, for the negative enrollment tests.

For each variant the negative tests need: the TPM makes it, the public area says what was asked (parsed
with attest.public), the blob's name is the TPM's name for it (it loads and certifies), and the
authority's own check refuses it with the typed error that test will expect. And the combinations the
TPM itself refuses, with its response code: those negatives can only be made by editing bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import pytest
import tpm2_pytss.constants as _c
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from tpm2_pytss.TSS2_Exception import TSS2_Exception

from agent.state import KeyBlob
from agent.tpm import KeySpec, TruckTpm
from attest.ak import check_attestation_key
from attest.alg import Alg, Curve
from attest.attestation import AttestType, parse_tpms_attest
from attest.certify import verify_certify
from attest.credential import make_credential
from attest.errors import (
    AkCanDecrypt,
    AkNotRestricted,
    AkRejected,
    AkWeakKey,
    AkWeakNameAlg,
    IdentityKeyNotFixedTpm,
)
from attest.public import EccParms, ObjectAttributes, RsaParms, TpmtPublic, parse_tpmt_public
from tests.support.swtpm import RunningTpm

pytestmark = pytest.mark.integration

A = ObjectAttributes
STANDARD_AK = (
    A.FIXED_TPM | A.FIXED_PARENT | A.SENSITIVE_DATA_ORIGIN | A.USER_WITH_AUTH | A.RESTRICTED | A.SIGN
)
AK = KeySpec.attestation_key()
IDENTITY = KeySpec.identity_key()


@pytest.fixture(params=["tpm", "rsa_tpm"])
def any_tpm(request: pytest.FixtureRequest) -> RunningTpm:
    """Once with the ECC (P-384) EK as the parent, once with the RSA-2048 EK."""
    running: RunningTpm = request.getfixturevalue(request.param)
    return running


def assert_nothing_loaded(tpm: RunningTpm) -> None:
    assert tpm.tool("tpm2_getcap", "handles-transient").strip() == b""
    assert tpm.tool("tpm2_getcap", "handles-loaded-session").strip() == b""


def created(truck: TruckTpm, tpm: RunningTpm, spec: KeySpec) -> tuple[KeyBlob, TpmtPublic]:
    blob = truck.create_key(tpm.ek.kind, spec)
    public = parse_tpmt_public(blob.public)
    assert blob.name == public.name()  # the name tpm2-pytss computed is the authority's computation
    assert blob.parent == tpm.ek.kind
    return blob, public


def assert_certifies(truck: TruckTpm, identity: KeyBlob, ak: KeyBlob) -> None:
    """Both blobs load under the EK with the name they carry (checked on load), and the AK signs a Certify."""
    nonce = os.urandom(32)
    info, _ = truck.certify(identity, ak, nonce)
    statement = parse_tpms_attest(info)
    assert statement.type == AttestType.CERTIFY
    assert statement.extra_data == nonce


# -- AK variants the TPM makes and the authority must refuse ----------------------------------------


@dataclass(frozen=True)
class AkVariant:
    spec: KeySpec
    attributes: ObjectAttributes
    refused_with: type[AkRejected]


AK_VARIANTS = {
    "not-restricted": AkVariant(replace(AK, restricted=False), STANDARD_AK & ~A.RESTRICTED, AkNotRestricted),
    # The TPM makes a key that signs and decrypts only without restricted and with a NULL scheme.
    "sign-and-decrypt": AkVariant(
        replace(AK, restricted=False, decrypt=True, scheme_pinned=False),
        (STANDARD_AK & ~A.RESTRICTED) | A.DECRYPT,
        AkNotRestricted,  # restricted is checked first; AkCanDecrypt needs a restricted one (see below)
    ),
    "rsa-1024": AkVariant(replace(AK, algorithm="rsa-1024"), STANDARD_AK, AkWeakKey),
    "sha1-name": AkVariant(replace(AK, name_alg="sha1"), STANDARD_AK, AkWeakNameAlg),
    "rsa-2048-sha1-name": AkVariant(
        replace(AK, algorithm="rsa-2048", name_alg="sha1"), STANDARD_AK, AkWeakNameAlg
    ),
}


@pytest.mark.parametrize("variant", AK_VARIANTS.values(), ids=AK_VARIANTS.keys())
def test_ak_variant_is_made_loads_and_is_refused_by_the_ak_check(
    any_tpm: RunningTpm, variant: AkVariant
) -> None:
    with TruckTpm.open(any_tpm.tcti) as truck:
        ak, public = created(truck, any_tpm, variant.spec)
        assert public.attributes == variant.attributes
        assert_certifies(truck, truck.create_identity_key(any_tpm.ek.kind), ak)

        # It also answers a credential made for its name: a negative test may get past ActivateCredential.
        secret = os.urandom(32)
        challenge = make_credential(
            parse_tpmt_public(truck.ek_public(any_tpm.ek.kind)), public.name(), secret
        )
        recovered = truck.activate_credential(
            ak, any_tpm.ek.kind, challenge.credential_blob, challenge.encrypted_secret
        )
        assert recovered == secret
    with pytest.raises(variant.refused_with):
        check_attestation_key(public)
    assert_nothing_loaded(any_tpm)


def test_rsa_1024_ak_is_a_1024_bit_rsassa_key(tpm: RunningTpm) -> None:
    with TruckTpm.open(tpm.tcti) as truck:
        _, public = created(truck, tpm, replace(AK, algorithm="rsa-1024"))
    assert public.type == Alg.RSA
    assert isinstance(public.parameters, RsaParms)
    assert public.parameters.key_bits == 1024
    assert (public.parameters.scheme.scheme, public.parameters.scheme.hash_alg) == (Alg.RSASSA, Alg.SHA256)
    assert public.public_key().key_size == 1024


def test_sha1_named_ak_has_a_sha1_name(tpm: RunningTpm) -> None:
    with TruckTpm.open(tpm.tcti) as truck:
        ak, public = created(truck, tpm, replace(AK, name_alg="sha1"))
    assert public.name_alg == Alg.SHA1
    assert ak.name[:2] == b"\x00\x04"
    assert len(ak.name) == 2 + 20
    # The signing scheme stays ECDSA-SHA256: only the name is weak.
    assert isinstance(public.parameters, EccParms)
    assert public.parameters.curve == Curve.NIST_P256
    assert (public.parameters.scheme.scheme, public.parameters.scheme.hash_alg) == (Alg.ECDSA, Alg.SHA256)


def test_sign_and_decrypt_ak_has_no_scheme(tpm: RunningTpm) -> None:
    with TruckTpm.open(tpm.tcti) as truck:
        _, public = created(truck, tpm, replace(AK, restricted=False, decrypt=True, scheme_pinned=False))
    assert public.has(A.SIGN)
    assert public.has(A.DECRYPT)
    assert isinstance(public.parameters, EccParms)
    assert public.parameters.scheme.scheme == Alg.NULL


def test_an_ak_that_decrypts_reaches_ak_can_decrypt_once_restricted_is_set(tpm: RunningTpm) -> None:
    """The TPM will not make a restricted sign+decrypt key; AkCanDecrypt is reached by setting restricted
    in the public area of a real sign+decrypt key (a byte edit, which changes the name)."""
    with TruckTpm.open(tpm.tcti) as truck:
        _, public = created(truck, tpm, replace(AK, restricted=False, decrypt=True, scheme_pinned=False))
    edited = bytearray(public.raw)
    edited[4:8] = (int(public.attributes) | A.RESTRICTED).to_bytes(4, "big")  # after type and nameAlg
    with pytest.raises(AkCanDecrypt):
        check_attestation_key(parse_tpmt_public(bytes(edited)))


# -- identity key without fixedTPM -------------------------------------------------------------------


def test_identity_key_without_fixed_tpm_certifies_but_verify_certify_refuses_it(any_tpm: RunningTpm) -> None:
    # Under the EK (fixedTPM) a child with fixedParent keeps fixedTPM: both must be cleared.
    spec = replace(IDENTITY, fixed_tpm=False, fixed_parent=False)
    kind = any_tpm.ek.kind
    nonce = os.urandom(32)
    with TruckTpm.open(any_tpm.tcti) as truck:
        identity, public = created(truck, any_tpm, spec)
        ak = truck.create_attestation_key(kind)
        info, signature = truck.certify(identity, ak, nonce)
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([]))
            .sign(truck.identity_signer(identity), hashes.SHA256())
        )
    assert public.attributes == A.SENSITIVE_DATA_ORIGIN | A.USER_WITH_AUTH | A.SIGN
    assert csr.is_signature_valid
    assert csr.public_key() == public.public_key()
    with pytest.raises(IdentityKeyNotFixedTpm):
        verify_certify(
            info,
            signature,
            ak=check_attestation_key(parse_tpmt_public(ak.public)),
            qualifying_data=nonce,
            identity=public,
            csr_public_key=csr.public_key(),
        )
    assert_nothing_loaded(any_tpm)


# -- the standard specs ------------------------------------------------------------------------------


def test_standard_specs_are_the_ak_and_identity_attributes(tpm: RunningTpm) -> None:
    with TruckTpm.open(tpm.tcti) as truck:
        _, ak = created(truck, tpm, AK)
        _, identity = created(truck, tpm, IDENTITY)
    assert ak.attributes == STANDARD_AK
    assert identity.attributes == STANDARD_AK & ~A.RESTRICTED
    check_attestation_key(ak)


# -- what the TPM refuses to make --------------------------------------------------------------------

REFUSED = {
    # Part 1 §27.2: a restricted key is either a signing key or a storage (decrypt) key.
    "restricted-sign-and-decrypt": (replace(AK, decrypt=True, scheme_pinned=False), _c.TPM2_RC.ATTRIBUTES),
    # Sign+decrypt must leave the scheme NULL.
    "sign-and-decrypt-with-scheme": (replace(AK, restricted=False, decrypt=True), _c.TPM2_RC.SCHEME),
    # A restricted signing key must carry its scheme: AkSchemeNotPinned needs a byte edit.
    "restricted-null-scheme": (replace(AK, scheme_pinned=False), _c.TPM2_RC.SCHEME),
    "rsa-restricted-null-scheme": (replace(AK, algorithm="rsa-2048", scheme_pinned=False), _c.TPM2_RC.SCHEME),
    # Under a fixedTPM parent, a fixedParent child is fixedTPM: AkNotFixedTpm needs fixedParent clear too,
    # and AkNotFixedParent alone (fixedTPM still set) cannot be made.
    "not-fixed-tpm-but-fixed-parent": (replace(AK, fixed_tpm=False), _c.TPM2_RC.ATTRIBUTES),
    "fixed-tpm-but-not-fixed-parent": (replace(AK, fixed_parent=False), _c.TPM2_RC.ATTRIBUTES),
    # An asymmetric key's private part is always made inside the TPM by TPM2_Create.
    "no-sensitive-data-origin": (replace(AK, sensitive_data_origin=False), _c.TPM2_RC.ATTRIBUTES),
    "restricted-neither-sign-nor-decrypt": (replace(AK, sign=False), _c.TPM2_RC.ATTRIBUTES),
}


@pytest.mark.parametrize(("spec", "rc"), REFUSED.values(), ids=REFUSED.keys())
def test_tpm_refuses(any_tpm: RunningTpm, spec: KeySpec, rc: int) -> None:
    with TruckTpm.open(any_tpm.tcti) as truck, pytest.raises(TSS2_Exception) as refused:
        truck.create_key(any_tpm.ek.kind, spec)
    assert refused.value.error == rc
    assert_nothing_loaded(any_tpm)


def test_ak_without_fixed_tpm_and_fixed_parent_is_made(tpm: RunningTpm) -> None:
    with TruckTpm.open(tpm.tcti) as truck:
        _, public = created(truck, tpm, replace(AK, fixed_tpm=False, fixed_parent=False))
    assert public.attributes == STANDARD_AK & ~(A.FIXED_TPM | A.FIXED_PARENT)
    with pytest.raises(AkRejected) as refused:
        check_attestation_key(public)
    assert refused.value.code == "ak-not-fixed-tpm"
