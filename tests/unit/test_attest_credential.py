"""attest.credential: the recorded TPM-activated vector, a software ActivateCredential, negatives.

The recorded vector (credential-ecc.json) was activated by a real swtpm when it was recorded (see
vectors/attest/regenerate.py); replaying its `rand` must reproduce it byte for byte. The software
ActivateCredential below mirrors Part 1 §24 from the TPM's side, with software EKs swapped into the
recorded EK public areas, so the RSA path and the integrity check are exercised without a TPM.
"""

from __future__ import annotations

import hmac
import struct

import pytest
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from attest.alg import Alg, digest_size, hash_for
from attest.credential import kdfa, kdfe, make_credential, secrets_match
from attest.errors import (
    ActivationSecretMismatch,
    CredentialSecretSize,
    EkNotStorageKey,
    MalformedStructure,
)
from attest.marshal import Reader
from attest.public import EccPoint, ObjectAttributes, TpmtPublic, parse_tpm2b_public
from tests.unit.vectors.attest.load import credential_vector, parameters_at, put_u16, raw, set_attributes
from tests.unit.vectors.attest.regenerate import ReplayRand

AK_NAME = raw("ak-ecc.name")
SECRET = bytes(range(32))


class IntegrityFailure(Exception):
    pass


def software_ek(kind: str) -> tuple[TpmtPublic, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey]:
    """The recorded EK public area of `kind` with its key replaced by a fresh software key."""
    data = raw(f"ek-{kind}.pub")
    if kind == "rsa":
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        modulus = rsa_key.public_key().public_numbers().n.to_bytes(256, "big")
        return parse_tpm2b_public(data[:-256] + modulus), rsa_key
    ec_key = ec.generate_private_key(ec.SECP384R1())
    numbers = ec_key.public_key().public_numbers()
    point = b"".join(struct.pack(">H", 48) + v.to_bytes(48, "big") for v in (numbers.x, numbers.y))
    return parse_tpm2b_public(data[: -len(point)] + point), ec_key


def software_activate(
    ek: TpmtPublic,
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    name: bytes,
    blob: bytes,
    enc: bytes,
) -> bytes:
    """TPM2_ActivateCredential's crypto (Part 1 §24, Annex B/C) from the TPM's side."""
    h = hash_for(ek.name_alg)
    bits = digest_size(ek.name_alg) * 8
    if isinstance(private, rsa.RSAPrivateKey):
        seed = private.decrypt(enc, padding.OAEP(mgf=padding.MGF1(h), algorithm=h, label=b"IDENTITY\x00"))
    else:
        r = Reader(enc, "TPMS_ECC_POINT")
        x, y = r.tpm2b(), r.tpm2b()
        r.finish()
        ephemeral = ec.EllipticCurvePublicKey.from_encoded_point(private.curve, b"\x04" + x + y)
        z = private.exchange(ec.ECDH(), ephemeral)
        assert isinstance(ek.unique, EccPoint)
        seed = kdfe(ek.name_alg, z, b"IDENTITY", party_u=x, party_v=ek.unique.x, bits=bits)
    r = Reader(blob, "TPM2B_ID_OBJECT")
    outer_hmac = r.tpm2b()
    enc_identity = r.take(r.remaining)
    mac = crypto_hmac.HMAC(kdfa(ek.name_alg, seed, b"INTEGRITY", context_u=b"", context_v=b"", bits=bits), h)
    mac.update(enc_identity + name)
    if not hmac.compare_digest(mac.finalize(), outer_hmac):
        raise IntegrityFailure("outer HMAC mismatch")
    key = kdfa(
        ek.name_alg, seed, b"STORAGE", context_u=name, context_v=b"", bits=ek.parameters.symmetric.key_bits
    )
    decryptor = Cipher(algorithms.AES(key), CFB(bytes(16))).decryptor()
    plain = Reader(decryptor.update(enc_identity) + decryptor.finalize(), "TPM2B_DIGEST")
    secret = plain.tpm2b()
    plain.finish()
    return secret


def test_recorded_vector_is_reproduced_from_its_rand() -> None:
    vector = credential_vector()
    rand = ReplayRand(bytes.fromhex(vector["rand"]))
    made = make_credential(
        parse_tpm2b_public(raw(vector["ek"])),
        bytes.fromhex(vector["object_name"]),
        bytes.fromhex(vector["secret"]),
        rand=rand,
    )
    assert rand.exhausted
    assert made.credential_blob.hex() == vector["credential_blob"]
    assert made.encrypted_secret.hex() == vector["encrypted_secret"]


def test_same_rand_same_credential() -> None:
    ek = parse_tpm2b_public(raw("ek-ecc.pub"))
    first = make_credential(ek, AK_NAME, SECRET, rand=lambda n: b"\x42" * n)
    second = make_credential(ek, AK_NAME, SECRET, rand=lambda n: b"\x42" * n)
    assert first == second
    third = make_credential(ek, AK_NAME, SECRET, rand=lambda n: b"\x43" * n)
    assert third.encrypted_secret != first.encrypted_secret


def test_rsa_credential_blob_depends_only_on_rand() -> None:
    # OAEP padding draws its own randomness, so only the blob is reproducible for an RSA EK.
    ek = parse_tpm2b_public(raw("ek-rsa.pub"))
    first = make_credential(ek, AK_NAME, SECRET, rand=lambda n: b"\x42" * n)
    second = make_credential(ek, AK_NAME, SECRET, rand=lambda n: b"\x42" * n)
    assert first.credential_blob == second.credential_blob
    assert len(first.encrypted_secret) == 256


@pytest.mark.parametrize("kind", ["rsa", "ecc"])
def test_software_activation_recovers_the_secret(kind: str) -> None:
    ek, private = software_ek(kind)
    made = make_credential(ek, AK_NAME, SECRET)
    assert software_activate(ek, private, AK_NAME, made.credential_blob, made.encrypted_secret) == SECRET


@pytest.mark.parametrize("kind", ["rsa", "ecc"])
def test_software_activation_for_another_name_fails_integrity(kind: str) -> None:
    ek, private = software_ek(kind)
    made = make_credential(ek, AK_NAME, SECRET)
    other = AK_NAME[:-1] + bytes([AK_NAME[-1] ^ 1])
    with pytest.raises(IntegrityFailure):
        software_activate(ek, private, other, made.credential_blob, made.encrypted_secret)


@pytest.mark.parametrize("kind", ["rsa", "ecc"])
def test_tampered_blob_fails_integrity(kind: str) -> None:
    ek, private = software_ek(kind)
    made = make_credential(ek, AK_NAME, SECRET)
    blob = bytearray(made.credential_blob)
    blob[-1] ^= 1
    with pytest.raises(IntegrityFailure):
        software_activate(ek, private, AK_NAME, bytes(blob), made.encrypted_secret)


def test_blob_layout() -> None:
    ek = parse_tpm2b_public(raw("ek-ecc.pub"))  # nameAlg SHA-384
    made = make_credential(ek, AK_NAME, SECRET)
    assert made.credential_blob[:2] == b"\x00\x30"
    assert len(made.credential_blob) == 2 + 48 + 2 + len(SECRET)
    assert len(made.encrypted_secret) == 2 + 48 + 2 + 48


def test_secret_of_15_bytes() -> None:
    with pytest.raises(CredentialSecretSize) as caught:
        make_credential(parse_tpm2b_public(raw("ek-ecc.pub")), AK_NAME, bytes(15))
    assert caught.value.code == "credential-secret-size"


def test_secret_of_16_bytes_is_enough() -> None:
    made = make_credential(parse_tpm2b_public(raw("ek-ecc.pub")), AK_NAME, bytes(16))
    # encIdentity is TPM2B_DIGEST(secret): 2 + 16 bytes after the size-prefixed outer HMAC.
    outer = int.from_bytes(made.credential_blob[:2], "big")
    assert len(made.credential_blob) == 2 + outer + 2 + 16


def test_secret_longer_than_ek_digest() -> None:
    with pytest.raises(CredentialSecretSize):
        make_credential(parse_tpm2b_public(raw("ek-rsa.pub")), AK_NAME, bytes(33))


@pytest.mark.parametrize(
    "name",
    [b"", AK_NAME[:-1], AK_NAME + b"\x00", b"\x00\x10" + bytes(32), b"\x77\x77" + bytes(32)],
    ids=["empty", "truncated", "trailing_byte", "null_alg", "unknown_alg"],
)
def test_malformed_object_name(name: bytes) -> None:
    with pytest.raises(MalformedStructure):
        make_credential(parse_tpm2b_public(raw("ek-ecc.pub")), name, SECRET)


def test_ek_without_decrypt() -> None:
    ek = parse_tpm2b_public(set_attributes(raw("ek-ecc.pub"), clear=ObjectAttributes.DECRYPT))
    with pytest.raises(EkNotStorageKey):
        make_credential(ek, AK_NAME, SECRET)


def test_ek_with_cbc_symmetric() -> None:
    data = raw("ek-rsa.pub")
    # TPMT_SYM_DEF_OBJECT: algorithm (2) | keyBits (2) | mode (2)
    ek = parse_tpm2b_public(put_u16(data, parameters_at(data) + 4, Alg.CBC))
    with pytest.raises(EkNotStorageKey):
        make_credential(ek, AK_NAME, SECRET)


def test_kdfa_first_block_is_hmac_of_the_counter_label_and_contexts() -> None:
    key = bytes(range(32))
    expected = crypto_hmac.HMAC(key, hashes.SHA256())
    expected.update(b"\x00\x00\x00\x01" + b"STORAGE\x00" + b"u" + b"v" + b"\x00\x00\x00\x80")
    assert (
        kdfa(Alg.SHA256, key, b"STORAGE", context_u=b"u", context_v=b"v", bits=128)
        == expected.finalize()[:16]
    )
    # A label that already carries its NUL is not given a second one.
    with_nul = kdfa(Alg.SHA256, key, b"STORAGE\x00", context_u=b"u", context_v=b"v", bits=128)
    assert with_nul == kdfa(Alg.SHA256, key, b"STORAGE", context_u=b"u", context_v=b"v", bits=128)


def test_kdfe_spans_several_blocks() -> None:
    out = kdfe(Alg.SHA256, b"z", b"IDENTITY", party_u=b"u", party_v=b"v", bits=512)
    h1 = hashes.Hash(hashes.SHA256())
    h1.update(b"\x00\x00\x00\x01z" + b"IDENTITY\x00uv")
    h2 = hashes.Hash(hashes.SHA256())
    h2.update(b"\x00\x00\x00\x02z" + b"IDENTITY\x00uv")
    assert out == h1.finalize() + h2.finalize()


def test_secrets_match() -> None:
    secrets_match(SECRET, bytes(SECRET))
    with pytest.raises(ActivationSecretMismatch) as caught:
        secrets_match(SECRET, SECRET[:-1] + b"\x00")
    assert caught.value.kind == "forbidden"
    with pytest.raises(ActivationSecretMismatch):
        secrets_match(SECRET, SECRET[:16])
