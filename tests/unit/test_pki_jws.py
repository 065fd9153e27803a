"""Compact JWS signed through a Signer, checked by pyjwt against the published JWK."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from pki.filekeys import FileKeyBackend
from pki.jws import b64url, key_id, public_jwk, sign_compact, unverified_part, unverified_type
from pki.signer import KeyAlgorithm


@pytest.mark.parametrize(
    ("algorithm", "alg"), [(KeyAlgorithm.EC_P256, "ES256"), (KeyAlgorithm.EC_P384, "ES384")]
)
def test_token_verifies_with_its_jwk(tmp_path: Path, algorithm: KeyAlgorithm, alg: str) -> None:
    signer = FileKeyBackend(tmp_path, b"pass").create(algorithm, "results")
    kid = key_id(signer)
    token = sign_compact(signer, {"sub": "t-001", "n": 1}, kid=kid)
    assert jwt.get_unverified_header(token) == {"alg": alg, "kid": kid, "typ": "JWT"}
    key = jwt.PyJWK(public_jwk(signer, kid=kid))
    assert jwt.decode(token, key.key, algorithms=[alg]) == {"sub": "t-001", "n": 1}


def test_key_id_is_the_rfc7638_thumbprint(tmp_path: Path) -> None:
    signer = FileKeyBackend(tmp_path, b"pass").create(KeyAlgorithm.EC_P256, "results")
    # The JWK as pyjwt exports the same public key; RFC 7638 §3.2: required members, sorted, no spaces.
    public = signer.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    exported = jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True)
    members = json.dumps(
        {k: exported[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True
    )
    assert key_id(signer) == b64url(hashlib.sha256(members.encode()).digest())


def test_one_changed_byte_fails_verification(tmp_path: Path) -> None:
    signer = FileKeyBackend(tmp_path, b"pass").create(KeyAlgorithm.EC_P256, "results")
    token = sign_compact(signer, {"status": "affirming"}, kid="k")
    header, _, signature = token.split(".")
    forged = header + "." + b64url(json.dumps({"status": "contraindicated"}).encode()) + "." + signature
    key = jwt.PyJWK(public_jwk(signer, kid="k")).key
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(forged, key, algorithms=["ES256"])


def test_rsa_and_ed25519_keys_are_refused(tmp_path: Path) -> None:
    backend = FileKeyBackend(tmp_path, b"pass")
    for algorithm in (KeyAlgorithm.RSA_3072, KeyAlgorithm.ED25519):
        with pytest.raises(ValueError, match="EC P-256 or P-384"):
            sign_compact(backend.create(algorithm, "results"), {}, kid="k")


def _segment(header: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (_segment({"alg": "ES256", "typ": "at+jwt"}) + ".e30.c2ln", "at+jwt"),
        (_segment({"alg": "ES256", "typ": "truck-request+jwt"}) + ".e30.", "truck-request+jwt"),
        (_segment({"alg": "ES256"}) + ".e30.c2ln", None),  # no typ
        (_segment({"alg": "ES256", "typ": 7}) + ".e30.c2ln", None),  # typ not a string
        (_segment(["typ", "at+jwt"]) + ".e30.c2ln", None),  # header not an object
        (_segment({"typ": "at+jwt"}), None),  # no dot: not a JWS
        (".e30.c2ln", None),  # empty header
        ("!!!." + "e30.c2ln", None),  # not base64url
        (base64.urlsafe_b64encode(b"\xff\xfe").decode() + ".e30.c2ln", None),  # not UTF-8
        (_segment({"typ": "at+jwt", "pad": "x" * 20000}) + ".e30.c2ln", None),  # oversized header
    ],
)
def test_unverified_type_peeks_only_at_a_well_formed_header(token: str, expected: str | None) -> None:
    assert unverified_type(token) == expected


def test_unverified_part_reads_the_payload_only_as_a_json_object() -> None:
    header = _segment({"alg": "ES256", "typ": "truck-request+jwt", "x5c": ["A" * 3000]})
    assert unverified_part(f"{header}.{_segment({'jti': 'j-1'})}.c2ln", 1) == {"jti": "j-1"}
    assert unverified_part(f"{header}.{_segment(['jti'])}.c2ln", 1) is None
    assert unverified_part(f"{header}..c2ln", 1) is None
    assert unverified_part(header, 1) is None
    # A truck's header with its certificates is still typed.
    assert unverified_type(f"{header}.e30.c2ln") == "truck-request+jwt"
