"""Evidence bundles verified offline: a good bundle (CA chain, truck-signed statement, covering attestation
result, one checkpoint, a consistency proof to a held checkpoint) verifies and says what it proved; each
negative changes one field and is refused with its own error."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pki.filekeys import FileKeyBackend
from pki.jws import ec_jwk
from pki.signer import KeyAlgorithm
from tlog.bundle import BUNDLE_MEDIA_TYPE, TRUST_MEDIA_TYPE, describe, parse_trust, verify_bundle
from tlog.checkpoint import Checkpoint, sign_checkpoint
from tlog.errors import (
    BundleAttestationInvalid,
    BundleCertificateInvalid,
    BundleSignatureInvalid,
    CheckpointOriginMismatch,
    ConsistencyProofInvalid,
    InclusionProofInvalid,
    MalformedBundle,
    MalformedTrust,
    NoteSignatureInvalid,
    StatementNotCanonical,
    TlogError,
)
from tlog.merkle import MerkleTree, leaf_hash
from tlog.note import NoteSigner
from tlog.statement import StatementCheckpoint, build_statement

ORIGIN = "weighstation.test/log"
ISSUER = "https://weighstation.test"
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
TRUCK = "truck-7"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool,
    san: str | None = None,
) -> x509.Certificate:
    issuer_name, issuer_key = issuer if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1 if not ca else 365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(san)]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _entry(kind: str, document: dict[str, Any], at: datetime) -> bytes:
    logged = {**document, "kind": kind, "logged_at": at.strftime("%Y-%m-%dT%H:%M:%SZ")}
    return json.dumps(logged, sort_keys=True, separators=(",", ":")).encode()


@dataclass
class World:
    trust: bytes
    bundle: dict[str, Any]
    held: bytes  # a signed checkpoint the insurer holds (older than the bundle's)
    log_signer: NoteSigner
    tree: MerkleTree
    issuing_key: ec.EllipticCurvePrivateKey

    def encoded(self) -> bytes:
        return json.dumps(self.bundle).encode()


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> FileKeyBackend:
    return FileKeyBackend(tmp_path_factory.mktemp("bundle-keys"), b"passphrase")


def _make_world(backend: FileKeyBackend) -> World:
    root_key, inter_key, truck_key, result_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(4))
    root = _cert("Weighstation Root", root_key, None, ca=True)
    inter = _cert("Weighstation Issuing", inter_key, ("Weighstation Root", root_key), ca=True)
    leaf = _cert(
        TRUCK,
        truck_key,
        ("Weighstation Issuing", inter_key),
        ca=False,
        san=f"spiffe://fleet.test/fleet/north/truck/{TRUCK}",
    )
    log_signer = NoteSigner.create(ORIGIN, backend.create(KeyAlgorithm.ED25519, "log"))
    tree = MerkleTree()
    entries = [_entry("certificate.issued", {"serial": str(i)}, NOW - timedelta(hours=2)) for i in range(3)]
    for e in entries:
        tree.append(leaf_hash(e))
    held_size = tree.size
    held = sign_checkpoint(Checkpoint(ORIGIN, held_size, tree.root()), [log_signer])

    # The attestation result that covers the truck, logged before the statement.
    issued = NOW - timedelta(minutes=10)
    claims = {
        "iss": ISSUER,
        "sub": f"spiffe://fleet.test/fleet/north/truck/{TRUCK}",
        "jti": "result-1",
        "iat": int(issued.timestamp()),
        "exp": int((issued + timedelta(minutes=60)).timestamp()),
        "weighstation": {"truck": TRUCK, "release": {"id": "r1", "version": "2026.11.1"}},
    }
    token = jwt.encode(claims, result_key, algorithm="ES256", headers={"kid": "results-1"})
    result_entry = _entry(
        "attestation.result",
        {
            "truck": TRUCK,
            "result": "result-1",
            "status": "affirming",
            "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
        },
        issued,
    )
    result_index = tree.append(leaf_hash(result_entry))

    statement = build_statement(
        name="mission-4711.json",
        payload_sha256=hashlib.sha256(b"manifest").digest(),
        kind="mission_manifest",
        truck=TRUCK,
        sequence=1,
        previous=None,
        checkpoint=StatementCheckpoint(ORIGIN, held_size, tree.root(held_size)),
        issued_at=NOW - timedelta(seconds=5),
    )
    signature = truck_key.sign(statement, ec.ECDSA(hashes.SHA256()))
    statement_entry = _entry(
        "truck.statement",
        {
            "truck": TRUCK,
            "sequence": 1,
            "statement_kind": "mission_manifest",
            "statement_sha256": hashlib.sha256(statement).hexdigest(),
            "statement": _b64(statement),
            "signature": _b64(signature),
            "certificate": _b64(leaf.public_bytes(serialization.Encoding.DER)),
            "certificate_serial": format(leaf.serial_number, "x"),
            "certificate_status": "good",
        },
        NOW,
    )
    statement_index = tree.append(leaf_hash(statement_entry))
    checkpoint = sign_checkpoint(Checkpoint(ORIGIN, tree.size, tree.root()), [log_signer])

    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "checkpoint": checkpoint.decode(),
        "statement": {
            "index": statement_index,
            "entry": _b64(statement_entry),
            "proof": [_b64(h) for h in tree.inclusion_proof(statement_index)],
        },
        "chain": [_b64(inter.public_bytes(serialization.Encoding.DER))],
        "attestation": {
            "index": result_index,
            "entry": _b64(result_entry),
            "proof": [_b64(h) for h in tree.inclusion_proof(result_index)],
            "token": token,
        },
        "consistency": {"size": held_size, "proof": [_b64(h) for h in tree.consistency_proof(held_size)]},
    }
    trust = {
        "mediaType": TRUST_MEDIA_TYPE,
        "log": {"origin": ORIGIN, "keys": [str(log_signer.verifier_key)]},
        "certificate_authorities": [root.public_bytes(serialization.Encoding.PEM).decode()],
        "result_tokens": {
            "issuer": ISSUER,
            "keys": [ec_jwk(result_key.public_key(), kid="results-1")],
        },
    }
    return World(json.dumps(trust).encode(), bundle, held, log_signer, tree, inter_key)


@pytest.fixture
def world(backend: FileKeyBackend) -> World:
    return _make_world(backend)


def test_good_bundle_verifies_and_says_what_it_proved(world: World) -> None:
    verified = verify_bundle(world.encoded(), parse_trust(world.trust), held_checkpoint=world.held)
    assert verified.statement.truck == TRUCK
    assert verified.statement.sequence == 1
    assert verified.index == 4
    assert verified.certificate_status == "good"
    assert verified.root.subject.rfc4514_string() == "CN=Weighstation Root"
    assert verified.attestation is not None
    assert (verified.attestation.status, verified.attestation.release) == ("affirming", "2026.11.1")
    assert verified.consistent_with == 3
    words = "\n".join(describe(verified))
    assert "Truck truck-7 signed mission manifest #1" in words
    assert "entry 4 of log 'weighstation.test/log'" in words
    assert "affirming, release 2026.11.1" in words
    assert "consistent with your checkpoint of size 3" in words


def test_without_held_checkpoint_the_consistency_part_is_not_needed(world: World) -> None:
    del world.bundle["consistency"]
    assert verify_bundle(world.encoded(), parse_trust(world.trust)).consistent_with is None


def _entry_of(world: World, part: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(base64.b64decode(world.bundle[part]["entry"]))
    return doc


def _set_entry(world: World, part: str, doc: dict[str, Any]) -> None:
    world.bundle[part]["entry"] = _b64(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())


def _flip_b64(value: str, at: int = 0) -> str:
    raw = bytearray(base64.b64decode(value))
    raw[at] ^= 0x01
    return _b64(bytes(raw))


def _statement_byte(w: World) -> None:
    doc = _entry_of(w, "statement")
    doc["statement"] = _b64(base64.b64decode(doc["statement"]).replace(b"4711", b"4712"))
    _set_entry(w, "statement", doc)


def _proof_node(w: World) -> None:
    w.bundle["statement"]["proof"][0] = _flip_b64(w.bundle["statement"]["proof"][0])


def _checkpoint_signature(w: World) -> None:
    text, _, signature = w.bundle["checkpoint"].rpartition(" ")
    w.bundle["checkpoint"] = f"{text} {_flip_b64(signature.strip(), 10)}\n"


def _checkpoint_root(w: World) -> None:
    # Re-signed by the real key over another root: the inclusion proof no longer leads to it.
    w.bundle["checkpoint"] = sign_checkpoint(
        Checkpoint(ORIGIN, w.tree.size, bytes(32)), [w.log_signer]
    ).decode()


def _checkpoint_root_unsigned(w: World) -> None:
    lines = w.bundle["checkpoint"].split("\n")
    lines[2] = _b64(bytes(32))
    w.bundle["checkpoint"] = "\n".join(lines)


def _checkpoint_size(w: World) -> None:
    lines = w.bundle["checkpoint"].split("\n")
    lines[1] = str(w.tree.size + 1)
    w.bundle["checkpoint"] = "\n".join(lines)


def _index(w: World) -> None:
    w.bundle["statement"]["index"] = 3


def _certificate(w: World) -> None:
    doc = _entry_of(w, "statement")
    other = ec.generate_private_key(ec.SECP256R1())
    forged = _cert(TRUCK, other, ("Weighstation Issuing", other), ca=False, san="spiffe://x/truck/truck-7")
    doc["certificate"] = _b64(forged.public_bytes(serialization.Encoding.DER))
    _set_entry(w, "statement", doc)


def _chain(w: World) -> None:
    w.bundle["chain"] = []


def _signature(w: World) -> None:
    doc = _entry_of(w, "statement")
    doc["signature"] = _flip_b64(doc["signature"], 8)
    _set_entry(w, "statement", doc)


def _status(w: World) -> None:
    doc = _entry_of(w, "statement")
    doc["certificate_status"] = "revoked"
    _set_entry(w, "statement", doc)


def _token(w: World) -> None:
    header, payload, signature = w.bundle["attestation"]["token"].split(".")
    w.bundle["attestation"]["token"] = f"{header}.{payload}.{signature[:-4]}AAAA"


def _media_type(w: World) -> None:
    w.bundle["mediaType"] = "application/json"


def _consistency(w: World) -> None:
    w.bundle["consistency"]["proof"][0] = _flip_b64(w.bundle["consistency"]["proof"][0])


def _entry_kind(w: World) -> None:
    doc = _entry_of(w, "statement")
    doc["kind"] = "attestation.result"
    _set_entry(w, "statement", doc)


# Each mutation, and the error it must raise. Entry edits also break inclusion, which is checked first
# where the entry's hash changes; edits to the proof, the checkpoint and the chain stand alone.
MUTATIONS: dict[str, tuple[Callable[[World], None], type[TlogError], str]] = {
    "statement byte": (_statement_byte, InclusionProofInvalid, "does not lead to the root"),
    "proof node": (_proof_node, InclusionProofInvalid, "does not lead to the root"),
    "checkpoint signature": (_checkpoint_signature, NoteSignatureInvalid, "does not verify"),
    "checkpoint root (re-signed)": (_checkpoint_root, InclusionProofInvalid, "does not lead to the root"),
    "checkpoint root (unsigned)": (_checkpoint_root_unsigned, NoteSignatureInvalid, "does not verify"),
    "checkpoint size": (_checkpoint_size, NoteSignatureInvalid, "does not verify"),
    "statement index": (_index, InclusionProofInvalid, "fewer hashes than index 3"),
    "certificate": (_certificate, InclusionProofInvalid, "does not lead to the root"),
    "signature": (_signature, InclusionProofInvalid, "does not lead to the root"),
    "certificate status": (_status, InclusionProofInvalid, "does not lead to the root"),
    "chain": (_chain, BundleCertificateInvalid, "does not chain to a trusted root"),
    "result token": (_token, BundleAttestationInvalid, "not the one the log entry names"),
    "media type": (_media_type, MalformedBundle, "mediaType"),
    "consistency proof": (_consistency, ConsistencyProofInvalid, "does not lead to the first root"),
    "entry kind": (_entry_kind, InclusionProofInvalid, "does not lead to the root"),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_one_altered_field_is_refused(world: World, name: str) -> None:
    mutate, error, reason = MUTATIONS[name]
    mutate(world)
    with pytest.raises(error, match=reason):
        verify_bundle(world.encoded(), parse_trust(world.trust), held_checkpoint=world.held)


def _relog(world: World, part: str, change: Callable[[dict[str, Any]], None]) -> None:
    """Change the entry of `part` and re-log it honestly (new tree, new checkpoint, new proofs), so only
    the check that looks at the changed field can refuse the bundle."""
    doc = _entry_of(world, part)
    change(doc)
    _set_entry(world, part, doc)
    tree = MerkleTree()
    entries = {
        world.bundle[p]["index"]: base64.b64decode(world.bundle[p]["entry"])
        for p in ("attestation", "statement")
    }
    for i in range(world.tree.size):
        tree.append(leaf_hash(entries[i]) if i in entries else world.tree.subtree(0, i))
    world.bundle["checkpoint"] = sign_checkpoint(
        Checkpoint(ORIGIN, tree.size, tree.root()), [world.log_signer]
    ).decode()
    for p in ("attestation", "statement"):
        world.bundle[p]["proof"] = [_b64(h) for h in tree.inclusion_proof(world.bundle[p]["index"])]
    world.bundle["consistency"]["proof"] = [_b64(h) for h in tree.consistency_proof(3)]


def _foreign_certificate(san: str) -> bytes:
    other = ec.generate_private_key(ec.SECP256R1())
    return _cert(TRUCK, other, ("Weighstation Issuing", other), ca=False, san=san).public_bytes(
        serialization.Encoding.DER
    )


def _sign_statement_again(doc: dict[str, Any], statement: bytes) -> None:
    doc["statement"] = _b64(statement)
    doc["statement_sha256"] = hashlib.sha256(statement).hexdigest()


LOGGED: dict[str, tuple[str, Callable[[dict[str, Any]], None], type[TlogError], str]] = {
    "signature by another key": (
        "statement",
        lambda d: d.update(
            signature=_b64(ec.generate_private_key(ec.SECP256R1()).sign(b"x", ec.ECDSA(hashes.SHA256())))
        ),
        BundleSignatureInvalid,
        "does not verify",
    ),
    "statement bytes changed": (
        "statement",
        lambda d: _sign_statement_again(d, base64.b64decode(d["statement"]).replace(b"4711", b"4712")),
        BundleSignatureInvalid,
        "does not verify",
    ),
    "statement not canonical": (
        "statement",
        lambda d: _sign_statement_again(d, base64.b64decode(d["statement"]) + b" "),
        StatementNotCanonical,
        "canonical form",
    ),
    "certificate of another CA": (
        "statement",
        lambda d: d.update(
            certificate=_b64(_foreign_certificate(f"spiffe://fleet.test/fleet/north/truck/{TRUCK}"))
        ),
        BundleCertificateInvalid,
        "did not issue the one below it",
    ),
    "statement digest field": (
        "statement",
        lambda d: d.update(statement_sha256="0" * 64),
        MalformedBundle,
        "sha256",
    ),
    "revoked at submission": (
        "statement",
        lambda d: d.update(certificate_status="revoked"),
        BundleCertificateInvalid,
        "'revoked'",
    ),
    "logged after the certificate expired": (
        "statement",
        lambda d: d.update(logged_at="2026-11-26T12:00:00Z"),
        BundleCertificateInvalid,
        "not at 2026-11-26",
    ),
    "result of another truck": (
        "attestation",
        lambda d: d.update(truck="truck-8"),
        BundleAttestationInvalid,
        "not of truck",
    ),
    "result token not the logged one": (
        "attestation",
        lambda d: d.update(token_sha256="0" * 64),
        BundleAttestationInvalid,
        "not the one the log entry names",
    ),
}


@pytest.mark.parametrize("name", sorted(LOGGED))
def test_honestly_logged_but_wrong_content_is_refused(world: World, name: str) -> None:
    part, change, error, reason = LOGGED[name]
    _relog(world, part, change)
    with pytest.raises(error, match=reason):
        verify_bundle(world.encoded(), parse_trust(world.trust), held_checkpoint=world.held)


def test_result_that_expired_before_the_statement_is_refused(backend: FileKeyBackend) -> None:
    world = _make_world(backend)
    _relog(world, "statement", lambda d: d.update(logged_at="2026-11-24T13:30:00Z"))
    with pytest.raises(BundleAttestationInvalid, match="not when the statement was logged"):
        verify_bundle(world.encoded(), parse_trust(world.trust))


def test_result_token_with_a_bad_signature_is_refused_even_when_logged(world: World) -> None:
    _token(world)
    token = world.bundle["attestation"]["token"]
    _relog(world, "attestation", lambda d: d.update(token_sha256=hashlib.sha256(token.encode()).hexdigest()))
    with pytest.raises(BundleAttestationInvalid, match="signature does not verify"):
        verify_bundle(world.encoded(), parse_trust(world.trust))


def test_certificate_of_another_truck_is_refused(world: World) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    other = _cert(
        "truck-8",
        key,
        ("Weighstation Issuing", world.issuing_key),
        ca=False,
        san="spiffe://fleet.test/fleet/north/truck/truck-8",
    )
    _relog(
        world,
        "statement",
        lambda d: d.update(certificate=_b64(other.public_bytes(serialization.Encoding.DER))),
    )
    with pytest.raises(BundleCertificateInvalid, match="not truck 'truck-7'"):
        verify_bundle(world.encoded(), parse_trust(world.trust))


def test_other_log_origin_is_refused(world: World) -> None:
    trust = json.loads(world.trust)
    trust["log"]["origin"] = "another.example/log"
    with pytest.raises(CheckpointOriginMismatch, match=r"not 'another\.example/log'"):
        verify_bundle(world.encoded(), parse_trust(json.dumps(trust).encode()))


def test_held_checkpoint_without_a_proof_for_it_is_refused(world: World) -> None:
    del world.bundle["consistency"]
    with pytest.raises(MalformedBundle, match="no consistency proof for your checkpoint of size 3"):
        verify_bundle(world.encoded(), parse_trust(world.trust), held_checkpoint=world.held)


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t.update(mediaType="x"),
        lambda t: t["log"].update(keys=[]),
        lambda t: t.update(certificate_authorities=["not a pem"]),
        lambda t: t["result_tokens"]["keys"][0].update(d="AAAA"),
    ],
)
def test_bad_trust_file_is_refused(world: World, change: Callable[[dict[str, Any]], None]) -> None:
    trust = json.loads(world.trust)
    change(trust)
    with pytest.raises(MalformedTrust):
        parse_trust(json.dumps(trust).encode())


def test_garbage_and_duplicate_members_are_refused(world: World, tmp_path: Path) -> None:
    trust = parse_trust(world.trust)
    with pytest.raises(MalformedBundle, match="not JSON"):
        verify_bundle(b"\xff not json", trust)
    text = world.encoded().decode()
    duplicated = text.replace('"chain":', '"chain": [], "chain":', 1)
    with pytest.raises(MalformedBundle, match="duplicate member"):
        verify_bundle(duplicated.encode(), trust)
