"""A release team's side for tests: a release-signing key and manifests signed with it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attest.release import MANIFEST_TYPE


@dataclass
class ReleaseSigner:
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    @property
    def public_pem(self) -> str:
        return (
            self.key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    def manifest(self, model: str, version: str, pcrs: Mapping[int, bytes], **extra: Any) -> str:
        document: dict[str, Any] = {
            "model": model,
            "version": version,
            "bank": "sha256",
            "pcrs": {str(i): value.hex() for i, value in sorted(pcrs.items())},
            **extra,
        }
        payload = json.dumps(document).encode()
        return jwt.api_jws.encode(payload, self.key, algorithm="ES256", headers={"typ": MANIFEST_TYPE})
