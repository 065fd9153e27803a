"""Sigstore interop formats for entries of our log: the Rekor v2 `hashedrekord` 0.0.2 entry body, the
bundle (v0.3, `application/vnd.dev.sigstore.bundle.v0.3+json`) and the `ClientTrustConfig` (trusted
root v0.1 + signing config v0.2) in their protobuf-JSON forms (camelCase, bytes as standard base64,
64-bit integers as decimal strings).

The entry body is RFC 8785 canonical JSON. It is a leaf of our log as is: the bundle's inclusion
proof and checkpoint prove that leaf. A Rekor v2 bundle carries no integrated time: the RFC 3161
timestamp dates the signature.

The log ID: the relying party matches a checkpoint signature line by the first 4 bytes of the entry's
log ID, so it is the 32-byte hash whose prefix is the signed-note key ID: SHA-256(name ‖ 0x0A ‖ 0x01 ‖
Ed25519 key) for an Ed25519 log key, SHA-256(SubjectPublicKeyInfo) for an ECDSA one.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from tlog.note import VerifierKey

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
TRUSTED_ROOT_MEDIA_TYPE = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
SIGNING_CONFIG_MEDIA_TYPE = "application/vnd.dev.sigstore.signingconfig.v0.2+json"
TRUST_CONFIG_MEDIA_TYPE = "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json"
HASHEDREKORD = "hashedrekord"
HASHEDREKORD_VERSION = "0.0.2"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def canonical_json(document: dict[str, Any]) -> bytes:
    """RFC 8785 (JCS) canonical bytes."""
    return rfc8785.dumps(document)


def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_details(key: PublicKeyTypes) -> str:
    """The protobuf PublicKeyDetails name of the keys we hold (P-256 ECDSA, Ed25519)."""
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "PKIX_ECDSA_P256_SHA_256"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "PKIX_ED25519"
    raise ValueError(f"no Sigstore key details for {type(key).__name__}")


def hashedrekord_body(digest: bytes, signature: bytes, certificate: x509.Certificate) -> bytes:
    """The canonical hashedrekord 0.0.2 entry: SHA-256 artifact digest, signature, signing certificate."""
    if len(digest) != 32:
        raise ValueError("the artifact digest is SHA-256")
    document = {
        "apiVersion": HASHEDREKORD_VERSION,
        "kind": HASHEDREKORD,
        "spec": {
            "hashedRekordV002": {
                "data": {"algorithm": "SHA2_256", "digest": b64(digest)},
                "signature": {
                    "content": b64(signature),
                    "verifier": {
                        "keyDetails": key_details(certificate.public_key()),
                        "x509Certificate": {"rawBytes": b64(_der(certificate))},
                    },
                },
            }
        },
    }
    return canonical_json(document)


def log_id(verifier_key: VerifierKey) -> bytes:
    """The 32-byte log ID whose first 4 bytes are the checkpoint signature's key ID."""
    key = verifier_key.public_key
    if isinstance(key, ed25519.Ed25519PublicKey):
        data = verifier_key.name.encode("utf-8") + b"\n\x01" + key.public_bytes_raw()
    else:
        data = _spki(key)
    digest = hashlib.sha256(data).digest()
    if int.from_bytes(digest[:4], "big") != verifier_key.key_id:
        raise ValueError("the log ID does not extend the note key ID")
    return digest


@dataclass(frozen=True)
class LoggedEntry:
    """An entry body of our log with its place and proof: leaf `index` of the tree that `checkpoint`
    (a signed note of `tree_size` and `root_hash`) signs, `proof` its RFC 9162 inclusion path."""

    body: bytes
    index: int
    tree_size: int
    root_hash: bytes
    proof: tuple[bytes, ...]
    checkpoint: bytes


def bundle(
    *,
    certificate: x509.Certificate,
    digest: bytes,
    signature: bytes,
    entry: LoggedEntry,
    log: VerifierKey,
    timestamps: Sequence[bytes],
) -> dict[str, Any]:
    """The Sigstore bundle v0.3 for a message signature logged as a hashedrekord 0.0.2 entry."""
    return {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {
            "certificate": {"rawBytes": b64(_der(certificate))},
            "tlogEntries": [
                {
                    "logIndex": str(entry.index),
                    "logId": {"keyId": b64(log_id(log))},
                    "kindVersion": {"kind": HASHEDREKORD, "version": HASHEDREKORD_VERSION},
                    "inclusionProof": {
                        "logIndex": str(entry.index),
                        "rootHash": b64(entry.root_hash),
                        "treeSize": str(entry.tree_size),
                        "hashes": [b64(h) for h in entry.proof],
                        "checkpoint": {"envelope": entry.checkpoint.decode("utf-8")},
                    },
                    "canonicalizedBody": b64(entry.body),
                }
            ],
            "timestampVerificationData": {
                "rfc3161Timestamps": [{"signedTimestamp": b64(t)} for t in timestamps]
            },
        },
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": b64(digest)},
            "signature": b64(signature),
        },
    }


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _valid_for(start: datetime, end: datetime | None = None) -> dict[str, str]:
    return {"start": _time(start)} | ({"end": _time(end)} if end is not None else {})


def _subject(certificate: x509.Certificate) -> dict[str, str]:
    def first(oid: x509.ObjectIdentifier) -> str:
        values = certificate.subject.get_attributes_for_oid(oid)
        return str(values[0].value) if values else ""

    return {
        "organization": first(x509.NameOID.ORGANIZATION_NAME),
        "commonName": first(x509.NameOID.COMMON_NAME),
    }


@dataclass(frozen=True)
class KeyedLog:
    """A log (our transparency log, or our CT log) as a trusted root lists it."""

    base_url: str
    public_key: PublicKeyTypes
    log_id: bytes
    valid_from: datetime
    checkpoint_key_id: bytes | None = None


@dataclass(frozen=True)
class CertificateAuthority:
    """A certificate chain (leaf or issuing CA first, root last) and the window it is trusted for."""

    uri: str
    chain: tuple[x509.Certificate, ...]
    valid_from: datetime
    valid_until: datetime | None = None


def _log_instance(log: KeyedLog) -> dict[str, Any]:
    instance: dict[str, Any] = {
        "baseUrl": log.base_url,
        "hashAlgorithm": "SHA2_256",
        "publicKey": {
            "rawBytes": b64(_spki(log.public_key)),
            "keyDetails": key_details(log.public_key),
            "validFor": _valid_for(log.valid_from),
        },
        "logId": {"keyId": b64(log.log_id)},
    }
    if log.checkpoint_key_id is not None:
        instance["checkpointKeyId"] = {"keyId": b64(log.checkpoint_key_id)}
    return instance


def _authority(ca: CertificateAuthority) -> dict[str, Any]:
    return {
        "subject": _subject(ca.chain[0]),
        "uri": ca.uri,
        "certChain": {"certificates": [{"rawBytes": b64(_der(c))} for c in ca.chain]},
        "validFor": _valid_for(ca.valid_from, ca.valid_until),
    }


def trust_config(
    *,
    tlog: KeyedLog,
    ctlog: KeyedLog,
    certificate_authorities: Sequence[CertificateAuthority],
    timestamp_authorities: Sequence[CertificateAuthority],
    service_url: str,
    operator: str,
    since: datetime,
) -> dict[str, Any]:
    """The ClientTrustConfig: our trusted root, and the signing config the schema requires. Its URLs
    name this service's certificate, token and log endpoints; they do not speak the Fulcio/Rekor APIs,
    so it serves verification only (`sigstore sign` against it is not supported)."""

    def service(path: str, version: int) -> dict[str, Any]:
        return {
            "url": f"{service_url}{path}",
            "majorApiVersion": version,
            "validFor": _valid_for(since),
            "operator": operator,
        }

    return {
        "mediaType": TRUST_CONFIG_MEDIA_TYPE,
        "trustedRoot": {
            "mediaType": TRUSTED_ROOT_MEDIA_TYPE,
            "tlogs": [_log_instance(tlog)],
            "certificateAuthorities": [_authority(ca) for ca in certificate_authorities],
            "ctlogs": [_log_instance(ctlog)],
            "timestampAuthorities": [_authority(ca) for ca in timestamp_authorities],
        },
        "signingConfig": {
            "mediaType": SIGNING_CONFIG_MEDIA_TYPE,
            "caUrls": [service("/v1/certificates", 1)],
            "oidcUrls": [service("/v1/oauth/token", 1)],
            "rekorTlogUrls": [service("/v1/log", 2)],
            "rekorTlogConfig": {"selector": "ANY"},
        },
    }
