"""Golden firmware releases: a release manifest is a compact JWS (ES256 or ES384) by a release key the
operator registered, over a JSON document naming the truck model, the version and the PCR values a truck
booting that release shows in one bank.

    {"model": "hauler-9", "version": "2026.11.1", "bank": "sha256",
     "pcrs": {"0": "<hex>", ..., "15": "<hex>"},
     "components": [{"name": "firmware", "pcr": 0, "digest": "<hex>"}, ...]}   # informative

The algorithm is pinned to the registered key's curve (never taken from the header), and the document is
parsed strictly: unknown members, wrong types and digests of the wrong size are refused.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from attest.errors import ReleaseManifestInvalid, ReleaseSignatureInvalid

MANIFEST_TYPE = "weighstation-release+jws"
_BANK_SIZES = {"sha256": 32, "sha384": 48}
_TEXT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_MEMBERS = frozenset({"model", "version", "bank", "pcrs", "components"})
_MAX_MANIFEST = 64 * 1024


@dataclass(frozen=True)
class Component:
    name: str
    pcr: int
    digest: bytes


@dataclass(frozen=True)
class ReleaseManifest:
    """A verified release manifest."""

    model: str
    version: str
    bank: str
    pcrs: dict[int, bytes]
    components: tuple[Component, ...]


def _algorithm(key: ec.EllipticCurvePublicKey) -> str:
    if isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    if isinstance(key.curve, ec.SECP384R1):
        return "ES384"
    raise ReleaseSignatureInvalid(f"release keys must be P-256 or P-384, not {key.curve.name}")


def verify_release_manifest(manifest: str, key: ec.EllipticCurvePublicKey) -> ReleaseManifest:
    """Verify the JWS with `key` (its curve fixes the algorithm) and parse the document strictly."""
    if len(manifest) > _MAX_MANIFEST:
        raise ReleaseManifestInvalid("release manifest is larger than 64 KiB")
    try:
        header = jwt.get_unverified_header(manifest)
    except jwt.DecodeError as exc:
        raise ReleaseManifestInvalid(f"release manifest is not a compact JWS: {exc}") from None
    if header.get("typ") != MANIFEST_TYPE:
        raise ReleaseManifestInvalid(f"release manifest header typ must be {MANIFEST_TYPE!r}")
    try:
        payload = jwt.api_jws.decode_complete(manifest, key, algorithms=[_algorithm(key)])["payload"]
    except jwt.InvalidSignatureError:
        raise ReleaseSignatureInvalid(
            "the release manifest's signature does not verify with the release key"
        ) from None
    except jwt.InvalidTokenError as exc:
        raise ReleaseSignatureInvalid(f"the release manifest's signature cannot be checked: {exc}") from None
    try:
        document = json.loads(payload)
    except ValueError as exc:
        raise ReleaseManifestInvalid(f"release manifest payload is not JSON: {exc}") from None
    return _parse(document)


def _parse(document: Any) -> ReleaseManifest:
    if not isinstance(document, dict):
        raise ReleaseManifestInvalid("release manifest must be a JSON object")
    unknown = set(document) - _MEMBERS
    if unknown:
        raise ReleaseManifestInvalid(f"release manifest has unknown members {sorted(unknown)}")
    model, version, bank = (document.get(name) for name in ("model", "version", "bank"))
    for name, value in (("model", model), ("version", version)):
        if not isinstance(value, str) or not _TEXT.fullmatch(value):
            raise ReleaseManifestInvalid(f"release manifest {name} must be 1-64 characters [A-Za-z0-9._+-]")
    if bank not in _BANK_SIZES:
        raise ReleaseManifestInvalid(f"release manifest bank must be one of {sorted(_BANK_SIZES)}")
    assert isinstance(model, str) and isinstance(version, str) and isinstance(bank, str)
    size = _BANK_SIZES[bank]
    raw_pcrs = document.get("pcrs")
    if not isinstance(raw_pcrs, dict) or not raw_pcrs:
        raise ReleaseManifestInvalid("release manifest pcrs must be a non-empty object")
    pcrs = {_pcr(index): _digest(value, size, f"pcrs[{index}]") for index, value in raw_pcrs.items()}
    raw_components = document.get("components", [])
    if not isinstance(raw_components, list) or len(raw_components) > 256:
        raise ReleaseManifestInvalid("release manifest components must be a list of at most 256")
    components = tuple(_component(item, size) for item in raw_components)
    return ReleaseManifest(model=model, version=version, bank=bank, pcrs=pcrs, components=components)


def _pcr(value: object) -> int:
    text = str(value)
    if not text.isdigit() or not 0 <= int(text) <= 23:
        raise ReleaseManifestInvalid(f"release manifest PCR index {text[:8]!r} is not 0..23")
    return int(text)


def _digest(value: object, size: int, where: str) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * size or not re.fullmatch(r"[0-9a-f]+", value):
        raise ReleaseManifestInvalid(f"release manifest {where} must be {size} bytes of lower-case hex")
    return bytes.fromhex(value)


def _component(item: object, size: int) -> Component:
    if not isinstance(item, dict) or set(item) != {"name", "pcr", "digest"}:
        raise ReleaseManifestInvalid("each component must be {name, pcr, digest}")
    name = item["name"]
    if not isinstance(name, str) or not _TEXT.fullmatch(name):
        raise ReleaseManifestInvalid("component name must be 1-64 characters [A-Za-z0-9._+-]")
    return Component(
        name=name, pcr=_pcr(item["pcr"]), digest=_digest(item["digest"], size, f"component {name}")
    )


def sign_release_manifest(
    key: ec.EllipticCurvePrivateKey, *, model: str, version: str, pcrs: dict[int, bytes], bank: str = "sha256"
) -> str:
    """The release team's side: a manifest `verify_release_manifest` accepts (checked before returning)."""
    document = {
        "model": model,
        "version": version,
        "bank": bank,
        "pcrs": {str(i): v.hex() for i, v in sorted(pcrs.items())},
    }
    manifest = jwt.api_jws.encode(
        json.dumps(document).encode(),
        key,
        algorithm=_algorithm(key.public_key()),
        headers={"typ": MANIFEST_TYPE},
    )
    verify_release_manifest(manifest, key.public_key())
    return manifest
