"""Release manifests: a good one verifies; each negative changes one thing (key, algorithm, header type,
a member, a digest size, a PCR index) and gets its typed error."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attest.errors import ReleaseManifestInvalid, ReleaseSignatureInvalid
from attest.release import MANIFEST_TYPE, verify_release_manifest
from pki.jws import b64url

KEY = ec.derive_private_key(0x5EED, ec.SECP256R1())
OTHER = ec.derive_private_key(0x0DD, ec.SECP256R1())


def document(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "model": "hauler-9",
        "version": "2026.11.1",
        "bank": "sha256",
        "pcrs": {str(i): f"{i:02x}" * 32 for i in range(16)},
        "components": [{"name": "firmware", "pcr": 0, "digest": "aa" * 32}],
    }
    doc.update(changes)
    return doc


def sign(doc: object, key: Any = KEY, algorithm: str = "ES256", typ: str = MANIFEST_TYPE) -> str:
    return jwt.api_jws.encode(json.dumps(doc).encode(), key, algorithm=algorithm, headers={"typ": typ})


def test_good_manifest() -> None:
    release = verify_release_manifest(sign(document()), KEY.public_key())
    assert (release.model, release.version, release.bank) == ("hauler-9", "2026.11.1", "sha256")
    assert release.pcrs[15] == bytes([15]) * 32 and len(release.pcrs) == 16
    assert release.components[0].name == "firmware" and release.components[0].digest == b"\xaa" * 32


def test_signed_by_another_key() -> None:
    with pytest.raises(ReleaseSignatureInvalid):
        verify_release_manifest(sign(document(), OTHER), KEY.public_key())


def test_algorithm_is_pinned_by_the_key_not_the_header() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ReleaseSignatureInvalid):
        # A P-384 release key only verifies ES384; an ES256 header is refused before any maths.
        verify_release_manifest(sign(document(), KEY, "ES256"), p384.public_key())
    pem = KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # The classic confusion: HMAC keyed with the public key's PEM (pyjwt will not make one, so by hand).
    signing_input = b64url(json.dumps({"alg": "HS256", "typ": MANIFEST_TYPE}).encode()) + "."
    signing_input += b64url(json.dumps(document()).encode())
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    hs = signing_input + "." + b64url(mac)
    with pytest.raises(ReleaseSignatureInvalid):
        verify_release_manifest(hs, KEY.public_key())
    none = jwt.api_jws.encode(
        json.dumps(document()).encode(), "", algorithm="none", headers={"typ": MANIFEST_TYPE}
    )
    with pytest.raises(ReleaseSignatureInvalid):
        verify_release_manifest(none, KEY.public_key())


def test_header_type_is_required() -> None:
    with pytest.raises(ReleaseManifestInvalid, match="typ"):
        verify_release_manifest(sign(document(), typ="JWT"), KEY.public_key())


@pytest.mark.parametrize(
    "changes",
    [
        {"extra": 1},
        {"bank": "sha1"},
        {"model": ""},
        {"version": 7},
        {"pcrs": {}},
        {"pcrs": {"24": "00" * 32}},
        {"pcrs": {"0": "00" * 31}},
        {"pcrs": {"0": "ZZ" * 32}},
        {"components": [{"name": "fw", "pcr": 0}]},
    ],
    ids=[
        "unknown-member",
        "sha1-bank",
        "empty-model",
        "version-type",
        "no-pcrs",
        "pcr-24",
        "short-digest",
        "not-hex",
        "component-shape",
    ],
)
def test_one_bad_member(changes: dict[str, Any]) -> None:
    with pytest.raises(ReleaseManifestInvalid):
        verify_release_manifest(sign(document(**changes)), KEY.public_key())


def test_not_a_jws() -> None:
    with pytest.raises(ReleaseManifestInvalid):
        verify_release_manifest("not-a-jws", KEY.public_key())
    with pytest.raises(ReleaseManifestInvalid, match="JSON"):
        verify_release_manifest(
            jwt.api_jws.encode(b"\xff", KEY, algorithm="ES256", headers={"typ": MANIFEST_TYPE}),
            KEY.public_key(),
        )
