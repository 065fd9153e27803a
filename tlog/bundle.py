"""Evidence bundles: one self-contained file that proves, offline, what a truck signed and when.

A bundle carries the transparency-log entry of a truck statement (the statement bytes, the truck's
signature, its certificate and the certificate status the authority saw at submission, all inside the
logged entry), the certificate's issuing chain, the log entry of the attestation result that covered
the truck then (with the result token itself), one signed checkpoint with an inclusion proof for each
entry, and optionally a consistency proof between that checkpoint and one the insurer already holds.

    {"mediaType": "application/vnd.weighstation.evidence.v1+json",
     "checkpoint": <signed checkpoint note, text>,
     "statement": {"index": n, "entry": <b64 entry bytes>, "proof": [<b64 hash>, ...]},
     "chain": [<b64 DER intermediate>, ...],
     "attestation": {"index": m, "entry": <b64>, "proof": [...], "token": <compact JWS>} | null,
     "consistency": {"size": k, "proof": [...]} | null}

The trust file pins what the insurer trusts, obtained once from the authority out of band:

    {"mediaType": "application/vnd.weighstation.trust.v1+json",
     "log": {"origin": ..., "keys": [<signed-note verifier key>, ...]},
     "certificate_authorities": [<PEM root>, ...],
     "result_tokens": {"issuer": ..., "keys": [<EC P-256 JWK with kid>, ...]}}

`verify_bundle` checks everything against the trust file only — nothing the bundle says about who
signed what is taken on its word — and returns a `VerifiedBundle` or raises one `BundleError`
subclass naming the first check that failed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tlog.checkpoint import VerifiedCheckpoint, verify_checkpoint
from tlog.errors import (
    BundleAttestationInvalid,
    BundleCertificateInvalid,
    BundleError,
    BundleSignatureInvalid,
    MalformedBundle,
    MalformedTrust,
    TlogError,
)
from tlog.merkle import leaf_hash
from tlog.note import VerifierKey, strict_b64decode
from tlog.statement import TruckStatement, parse_statement

BUNDLE_MEDIA_TYPE = "application/vnd.weighstation.evidence.v1+json"
TRUST_MEDIA_TYPE = "application/vnd.weighstation.trust.v1+json"
STATEMENT_ENTRY = "truck.statement"
RESULT_ENTRY = "attestation.result"
# Bundles are a few kilobytes; the bound keeps a hostile file from costing much to reject.
MAX_BUNDLE_BYTES = 1 << 20
MAX_CHAIN = 8
MAX_PROOF = 64


# -- reading -----------------------------------------------------------------------------------------


def _ts(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _fail(error: type[BundleError], message: str) -> NoReturn:
    raise error(message)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise MalformedBundle(f"duplicate member in {sorted(keys)}")
    return dict(pairs)


def _json(data: bytes, what: str, error: type[BundleError]) -> dict[str, Any]:
    if len(data) > MAX_BUNDLE_BYTES:
        _fail(error, f"{what} is {len(data)} bytes; at most {MAX_BUNDLE_BYTES}")
    try:
        value = json.loads(data, object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _fail(error, f"{what} is not JSON: {exc}")
    except MalformedBundle as exc:
        _fail(error, f"{what}: {exc.reason}")
    if not isinstance(value, dict):
        _fail(error, f"{what} is not a JSON object")
    return value


def _member(obj: Mapping[str, Any], key: str, kind: type, what: str, error: type[BundleError]) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        _fail(error, f"{what}.{key} is missing or not a {kind.__name__}")
    return value


def _b64(value: object, what: str, error: type[BundleError] = MalformedBundle) -> bytes:
    if not isinstance(value, str):
        _fail(error, f"{what} is not a base64 string")
    try:
        return strict_b64decode(value)
    except TlogError as exc:
        _fail(error, f"{what}: {exc.reason}")


def _proof(value: object, what: str) -> tuple[bytes, ...]:
    if not isinstance(value, list) or len(value) > MAX_PROOF:
        _fail(MalformedBundle, f"{what} is not a list of at most {MAX_PROOF} hashes")
    return tuple(_b64(h, f"{what}[{i}]") for i, h in enumerate(value))


def _index(obj: Mapping[str, Any], what: str) -> int:
    index = _member(obj, "index", int, what, MalformedBundle)
    if index < 0:
        _fail(MalformedBundle, f"{what}.index is negative")
    return int(index)


# -- trust -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trust:
    """What the insurer trusts: the log (origin and keys), the CA roots, the result-token keys."""

    origin: str
    log_keys: tuple[VerifierKey, ...]
    roots: tuple[x509.Certificate, ...]
    result_issuer: str
    result_keys: Mapping[str, ec.EllipticCurvePublicKey]


def _jwk_key(jwk: object, i: int) -> tuple[str, ec.EllipticCurvePublicKey]:
    if not isinstance(jwk, dict):
        _fail(MalformedTrust, f"result_tokens.keys[{i}] is not an object")
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256" or "d" in jwk:
        _fail(MalformedTrust, f"result_tokens.keys[{i}] is not a public EC P-256 JWK")
    kid = _member(jwk, "kid", str, f"result_tokens.keys[{i}]", MalformedTrust)
    x, y = (_b64url(jwk.get(c), f"result_tokens.keys[{i}].{c}", MalformedTrust) for c in ("x", "y"))
    try:
        key = ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
        ).public_key()
    except ValueError as exc:
        _fail(MalformedTrust, f"result_tokens.keys[{i}]: {exc}")
    return kid, key


def parse_trust(data: bytes) -> Trust:
    doc = _json(data, "trust file", MalformedTrust)
    if doc.get("mediaType") != TRUST_MEDIA_TYPE:
        _fail(MalformedTrust, f"trust file mediaType is not {TRUST_MEDIA_TYPE}")
    log = _member(doc, "log", dict, "trust", MalformedTrust)
    origin = _member(log, "origin", str, "trust.log", MalformedTrust)
    keys = _member(log, "keys", list, "trust.log", MalformedTrust)
    try:
        log_keys = tuple(
            VerifierKey.parse(k) if isinstance(k, str) else _fail(MalformedTrust, "key") for k in keys
        )
    except TlogError as exc:
        _fail(MalformedTrust, f"trust.log.keys: {exc.reason}")
    if not log_keys:
        _fail(MalformedTrust, "trust.log.keys is empty")
    pems = _member(doc, "certificate_authorities", list, "trust", MalformedTrust)
    try:
        roots = tuple(x509.load_pem_x509_certificate(p.encode()) for p in pems if isinstance(p, str))
    except ValueError as exc:
        _fail(MalformedTrust, f"trust.certificate_authorities: {exc}")
    if not roots or len(roots) != len(pems):
        _fail(MalformedTrust, "trust.certificate_authorities must be a non-empty list of PEM certificates")
    results = _member(doc, "result_tokens", dict, "trust", MalformedTrust)
    issuer = _member(results, "issuer", str, "trust.result_tokens", MalformedTrust)
    jwks = _member(results, "keys", list, "trust.result_tokens", MalformedTrust)
    return Trust(origin, log_keys, roots, issuer, dict(_jwk_key(k, i) for i, k in enumerate(jwks)))


# -- the statement's certificate ----------------------------------------------------------------------


def _certificate(der: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        _fail(BundleCertificateInvalid, f"{what} is not a DER certificate: {exc}")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _in_date(cert: x509.Certificate, at: datetime, what: str) -> None:
    if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
        _fail(
            BundleCertificateInvalid,
            f"{what} ({cert.subject.rfc4514_string()}) is valid {_ts(cert.not_valid_before_utc)}.."
            f"{_ts(cert.not_valid_after_utc)}, not at {_ts(at)}",
        )


def _chain_to_root(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    at: datetime,
) -> x509.Certificate:
    """Walk leaf → intermediates → a trusted root, each signature and validity checked at `at`."""
    _in_date(leaf, at, "the signing certificate")
    current, path = leaf, list(intermediates)
    for depth in range(MAX_CHAIN + 1):
        for root in roots:
            if current.issuer == root.subject:
                try:
                    current.verify_directly_issued_by(root)
                except (ValueError, TypeError, InvalidSignature):
                    continue
                _in_date(root, at, "the trusted root")
                return root
        if not path:
            break
        issuer = path.pop(0)
        if not _is_ca(issuer):
            _fail(BundleCertificateInvalid, f"chain certificate {depth} is not a CA")
        try:
            current.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            _fail(BundleCertificateInvalid, f"chain certificate {depth} did not issue the one below it")
        _in_date(issuer, at, f"chain certificate {depth}")
        current = issuer
    _fail(BundleCertificateInvalid, "the signing certificate does not chain to a trusted root")


def _spiffe_truck(cert: x509.Certificate) -> str:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        _fail(BundleCertificateInvalid, "the signing certificate has no subject alternative name")
    uris = [u for u in names.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith("spiffe://")]
    if len(uris) != 1 or "/truck/" not in uris[0]:
        _fail(BundleCertificateInvalid, "the signing certificate does not name one truck SPIFFE ID")
    return uris[0].rsplit("/truck/", 1)[1]


# -- the result token ----------------------------------------------------------------------------------


def _b64url(value: object, what: str, error: type[BundleError]) -> bytes:
    if not isinstance(value, str) or "=" in value:
        _fail(error, f"{what} is not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        _fail(error, f"{what} is not base64url")


def _result_claims(token: str, trust: Trust) -> dict[str, Any]:
    """The claims of an ES256 result token signed by a trusted result key (alg pinned, kid required)."""
    parts = token.split(".")
    if len(parts) != 3:
        _fail(BundleAttestationInvalid, "the result token is not a compact JWS")
    header = _json(
        _b64url(parts[0], "token header", BundleAttestationInvalid), "token header", BundleAttestationInvalid
    )
    if header.get("alg") != "ES256":
        _fail(BundleAttestationInvalid, f"the result token's alg is {header.get('alg')!r}; ES256 is pinned")
    key = trust.result_keys.get(str(header.get("kid")))
    if key is None:
        _fail(
            BundleAttestationInvalid,
            f"the result token's kid {header.get('kid')!r} is not a trusted result key",
        )
    raw = _b64url(parts[2], "token signature", BundleAttestationInvalid)
    if len(raw) != 64:
        _fail(BundleAttestationInvalid, "the result token's signature is not 64 bytes")
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    try:
        key.verify(der, f"{parts[0]}.{parts[1]}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        _fail(BundleAttestationInvalid, "the result token's signature does not verify")
    claims = _json(
        _b64url(parts[1], "token payload", BundleAttestationInvalid),
        "token payload",
        BundleAttestationInvalid,
    )
    if claims.get("iss") != trust.result_issuer:
        _fail(BundleAttestationInvalid, f"the result token's issuer is {claims.get('iss')!r}")
    return claims


# -- the bundle ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CoveringResult:
    """The attestation result that was valid when the statement was logged."""

    index: int
    id: str
    status: str
    release: str
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class VerifiedBundle:
    statement: TruckStatement
    index: int
    logged_at: datetime
    certificate: x509.Certificate
    root: x509.Certificate
    certificate_status: str  # as the authority logged it at submission
    checkpoint: VerifiedCheckpoint
    attestation: CoveringResult | None
    consistent_with: int | None  # size of the insurer's checkpoint the bundle's is consistent with


def _logged(entry: bytes, kind: str, what: str) -> dict[str, Any]:
    doc = _json(entry, f"{what} entry", MalformedBundle)
    if doc.get("kind") != kind:
        _fail(MalformedBundle, f"{what} entry is of kind {doc.get('kind')!r}, not {kind!r}")
    return doc


def _time(value: object, what: str) -> datetime:
    if not isinstance(value, str):
        _fail(MalformedBundle, f"{what} is not a time")
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        _fail(MalformedBundle, f"{what} {value!r} is not an RFC 3339 time")
    if at.tzinfo is None:
        _fail(MalformedBundle, f"{what} has no time zone")
    return at.astimezone(UTC)


def _included(checkpoint: VerifiedCheckpoint, part: Mapping[str, Any], what: str) -> tuple[int, bytes]:
    index = _index(part, what)
    entry = _b64(part.get("entry"), f"{what}.entry")
    proof = _proof(part.get("proof"), f"{what}.proof")
    checkpoint.verify_inclusion(leaf_hash(entry), index, proof)
    return index, entry


def _covering_result(
    part: Mapping[str, Any],
    checkpoint: VerifiedCheckpoint,
    trust: Trust,
    *,
    truck: str,
    statement_index: int,
    at: datetime,
) -> CoveringResult:
    index, entry = _included(checkpoint, part, "attestation")
    if index >= statement_index:
        _fail(
            BundleAttestationInvalid, f"the attestation result (index {index}) was logged after the statement"
        )
    logged = _logged(entry, RESULT_ENTRY, "attestation")
    token = _member(part, "token", str, "attestation", MalformedBundle)
    if not hmac.compare_digest(hashlib.sha256(token.encode()).hexdigest(), str(logged.get("token_sha256"))):
        _fail(BundleAttestationInvalid, "the result token is not the one the log entry names")
    claims = _result_claims(token, trust)
    ours = claims.get("weighstation")
    if logged.get("truck") != truck or not isinstance(ours, dict) or ours.get("truck") != truck:
        _fail(BundleAttestationInvalid, f"the attestation result is not of truck {truck!r}")
    issued, expires = claims.get("iat"), claims.get("exp")
    if not isinstance(issued, int) or not isinstance(expires, int):
        _fail(BundleAttestationInvalid, "the result token has no iat/exp")
    issued_at, expires_at = datetime.fromtimestamp(issued, UTC), datetime.fromtimestamp(expires, UTC)
    if not issued_at <= at < expires_at:
        _fail(
            BundleAttestationInvalid,
            f"the attestation result was valid {_ts(issued_at)}..{_ts(expires_at)}, "
            f"not when the statement was logged ({_ts(at)})",
        )
    release = ours.get("release")
    return CoveringResult(
        index=index,
        id=str(claims.get("jti")),
        status=str(logged.get("status")),
        release=str(release.get("version")) if isinstance(release, dict) else "unknown",
        issued_at=issued_at,
        expires_at=expires_at,
    )


def verify_bundle(data: bytes, trust: Trust, *, held_checkpoint: bytes | None = None) -> VerifiedBundle:
    """Verify an evidence bundle offline against `trust`; with `held_checkpoint` (a signed checkpoint the
    insurer already holds), also that the bundle's checkpoint and it are views of one log."""
    doc = _json(data, "bundle", MalformedBundle)
    if doc.get("mediaType") != BUNDLE_MEDIA_TYPE:
        _fail(MalformedBundle, f"bundle mediaType is not {BUNDLE_MEDIA_TYPE}")
    # 1. The checkpoint is signed by the trusted log key, for the trusted origin.
    note = _member(doc, "checkpoint", str, "bundle", MalformedBundle)
    checkpoint = verify_checkpoint(note.encode(), trust.log_keys, origin=trust.origin)
    # 2. The statement's entry is in the tree that checkpoint signs.
    part = _member(doc, "statement", dict, "bundle", MalformedBundle)
    index, entry = _included(checkpoint, part, "statement")
    logged = _logged(entry, STATEMENT_ENTRY, "statement")
    logged_at = _time(logged.get("logged_at"), "statement entry logged_at")
    # 3. The entry holds the statement itself, which parses strictly and matches the entry's fields.
    statement = parse_statement(_b64(logged.get("statement"), "statement entry statement"))
    if logged.get("statement_sha256") != statement.sha256.hex():
        _fail(MalformedBundle, "the statement entry's statement_sha256 is not the statement's")
    if logged.get("truck") != statement.truck or logged.get("sequence") != statement.sequence:
        _fail(MalformedBundle, "the statement entry's truck or sequence is not the statement's")
    # 4. Its certificate chains to a trusted root at the time it was logged, and names the truck.
    cert = _certificate(
        _b64(logged.get("certificate"), "statement entry certificate"), "the signing certificate"
    )
    chain = _member(doc, "chain", list, "bundle", MalformedBundle)
    if len(chain) > MAX_CHAIN:
        _fail(MalformedBundle, f"bundle.chain has more than {MAX_CHAIN} certificates")
    intermediates = [
        _certificate(_b64(c, f"chain[{i}]"), f"chain certificate {i}") for i, c in enumerate(chain)
    ]
    root = _chain_to_root(cert, intermediates, trust.roots, logged_at)
    if _spiffe_truck(cert) != statement.truck:
        _fail(BundleCertificateInvalid, f"the signing certificate is not truck {statement.truck!r}'s")
    # 5. The truck's key signed exactly those statement bytes.
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        _fail(BundleSignatureInvalid, "the signing certificate's key is not EC P-256")
    try:
        key.verify(
            _b64(logged.get("signature"), "statement entry signature"),
            statement.data,
            ec.ECDSA(hashes.SHA256()),
        )
    except InvalidSignature:
        _fail(
            BundleSignatureInvalid, "the statement's signature does not verify with the signing certificate"
        )
    status = str(logged.get("certificate_status"))
    if status != "good":
        _fail(BundleCertificateInvalid, f"the authority logged the certificate as {status!r} at submission")
    # 6. The attestation result that covered the truck when the statement was logged.
    attestation = doc.get("attestation")
    covering = None
    if attestation is not None:
        if not isinstance(attestation, dict):
            _fail(MalformedBundle, "bundle.attestation is not an object")
        covering = _covering_result(
            attestation, checkpoint, trust, truck=statement.truck, statement_index=index, at=logged_at
        )
    # 7. Consistency with the insurer's own checkpoint, when one is given.
    consistent_with = None
    if held_checkpoint is not None:
        held = verify_checkpoint(held_checkpoint, trust.log_keys, origin=trust.origin)
        part = doc.get("consistency")
        if not isinstance(part, dict) or part.get("size") != held.size:
            _fail(
                MalformedBundle,
                f"the bundle has no consistency proof for your checkpoint of size {held.size}",
            )
        proof = _proof(part.get("proof"), "consistency.proof")
        older, newer = (held, checkpoint) if held.size <= checkpoint.size else (checkpoint, held)
        newer.verify_consistency(older, proof)
        consistent_with = held.size
    return VerifiedBundle(
        statement=statement,
        index=index,
        logged_at=logged_at,
        certificate=cert,
        root=root,
        certificate_status=status,
        checkpoint=checkpoint,
        attestation=covering,
        consistent_with=consistent_with,
    )


def describe(verified: VerifiedBundle) -> list[str]:
    """What a verified bundle proves, in plain words."""
    s, cp = verified.statement, verified.checkpoint
    lines = [
        f"Truck {s.truck} signed {s.kind.replace('_', ' ')} #{s.sequence} for payload {s.name!r} "
        f"(sha256 {s.payload_sha256.hex()}), issued {_ts(s.issued_at)}.",
        f"The signature verifies with certificate {verified.certificate.serial_number:x}, which chains to "
        f"{verified.root.subject.rfc4514_string()} and was in date and not revoked when the authority logged "
        f"the statement ({_ts(verified.logged_at)}).",
        f"The statement is entry {verified.index} of log {cp.origin!r}, included in the checkpoint of size "
        f"{cp.size} signed by the trusted log key.",
    ]
    if s.previous is None:
        lines.append("It is the first statement of the truck's chain.")
    else:
        lines.append(f"It follows the truck's statement with sha256 {s.previous.hex()}.")
    a = verified.attestation
    if a is None:
        lines.append("The bundle carries no attestation result: the truck's attestation state is not proven.")
    else:
        lines.append(
            f"At that time the truck held attestation result {a.id} ({a.status}, release {a.release}), valid "
            f"{_ts(a.issued_at)} to {_ts(a.expires_at)}, logged as entry {a.index}."
        )
    if verified.consistent_with is not None:
        lines.append(
            f"The log is consistent with your checkpoint of size {verified.consistent_with}: "
            "both are views of one append-only log."
        )
    return lines
