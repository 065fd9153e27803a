"""Vault/OpenBao Transit key backend: CA and log keys that never leave Vault.

`TransitSigner.private_key()` returns a stand-in that subclasses cryptography's abstract private
key classes; cryptography's Certificate/CRL/OCSP/CSR builders call its Python-level `sign`, which
hashes locally and asks Transit to sign the digest. Every path that would reveal private material
raises `PrivateKeyNotExportable`.

A signer pins the key version it loaded: the certificate carries that public key, so a rotation in
Vault must never silently switch the key that signs under it.

Only the typed `client.adapter` is used (hvac's high-level methods are untyped in types-hvac), one
HTTP round trip per signature over the client's keep-alive session.
"""

from __future__ import annotations

import base64
import re
import secrets
import threading
from typing import Any, NoReturn

import hvac
import hvac.exceptions
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
)
from cryptography.utils import Buffer

from pki.errors import KeyNotFound, SignerUnavailable
from pki.signer import KeyAlgorithm, algorithm_of

__all__ = ["PrivateKeyNotExportable", "TransitBackend", "TransitSigner"]

_REF_PREFIX = "transit:"
# Starts with an alphanumeric so "." / ".." can never reach the URL path.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SIGNATURE = re.compile(r"vault:v([1-9][0-9]*):([A-Za-z0-9+/=]+)")

_KEY_TYPES: dict[KeyAlgorithm, str] = {
    KeyAlgorithm.EC_P256: "ecdsa-p256",
    KeyAlgorithm.EC_P384: "ecdsa-p384",
    KeyAlgorithm.RSA_3072: "rsa-3072",
    KeyAlgorithm.ED25519: "ed25519",
}
_HASH_NAMES: dict[str, str] = {"sha256": "sha2-256", "sha384": "sha2-384", "sha512": "sha2-512"}

# Transport failures and server-side errors: Vault could not sign right now. Unauthorized /
# Forbidden count too (expired or revoked token) — an operational failure, not a caller error.
_UNAVAILABLE: tuple[type[Exception], ...] = (
    requests.exceptions.RequestException,
    hvac.exceptions.VaultDown,
    hvac.exceptions.InternalServerError,
    hvac.exceptions.BadGateway,
    hvac.exceptions.UnexpectedError,
    hvac.exceptions.RateLimitExceeded,
    hvac.exceptions.VaultNotInitialized,
    hvac.exceptions.Unauthorized,
    hvac.exceptions.Forbidden,
)


class PrivateKeyNotExportable(TypeError):
    """Raised by every operation that would need the private key outside Vault."""

    def __init__(self, operation: str) -> None:
        super().__init__(f"{operation}: the private key lives in Vault Transit and cannot leave it")


def _unavailable(exc: Exception) -> SignerUnavailable:
    return SignerUnavailable(f"vault transit unavailable: {type(exc).__name__}: {exc}")


def _hash_name(algorithm: hashes.HashAlgorithm) -> str:
    name = _HASH_NAMES.get(algorithm.name)
    if name is None:
        raise ValueError(f"hash {algorithm.name} is not supported by the transit signer")
    return name


def _digest(data: bytes, algorithm: hashes.HashAlgorithm | utils.Prehashed) -> tuple[bytes, str]:
    """(digest, transit hash name); Prehashed input is taken as the digest itself."""
    if isinstance(algorithm, utils.Prehashed):
        if len(data) != algorithm.digest_size:
            raise ValueError("prehashed data does not match the digest size")
        # Prehashed has no public accessor for its hash; `_algorithm` is stable since 1.x.
        return data, _hash_name(algorithm._algorithm)
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize(), _hash_name(algorithm)


class TransitSigner:
    """A Transit key pinned to one version. Implements pki.signer.Signer."""

    def __init__(
        self,
        client: hvac.Client,
        mount: str,
        name: str,
        version: int,
        public_key: CertificateIssuerPublicKeyTypes,
    ) -> None:
        self._client = client
        self._sign_path = f"/v1/{mount}/sign/{name}"
        self._name = name
        self._version = version
        self._public_key = public_key
        self._algorithm = algorithm_of(public_key)
        self._private_key = _wrap(self)

    def __repr__(self) -> str:
        return f"TransitSigner({self.key_ref!r}, v{self._version}, {self._algorithm.value})"

    @property
    def key_ref(self) -> str:
        # The version is part of the reference so a restart pins the same key a CA certificate names,
        # even if someone rotated the key in Vault meanwhile.
        return f"{_REF_PREFIX}{self._name}@{self._version}"

    @property
    def key_version(self) -> int:
        """The Transit key version every signature is made with."""
        return self._version

    @property
    def algorithm(self) -> KeyAlgorithm:
        return self._algorithm

    def public_key(self) -> CertificateIssuerPublicKeyTypes:
        return self._public_key

    def private_key(self) -> CertificateIssuerPrivateKeyTypes:
        return self._private_key

    def transit_sign(self, payload: bytes, hash_algorithm: str | None, **options: str) -> bytes:
        """Low level: one Transit sign call. `hash_algorithm` set = `payload` is that digest."""
        body: dict[str, Any] = {
            "input": base64.b64encode(payload).decode("ascii"),
            "key_version": self._version,
            **options,
        }
        if hash_algorithm is not None:
            body["prehashed"] = True
            body["hash_algorithm"] = hash_algorithm
        try:
            response = self._client.adapter.post(self._sign_path, json=body)
        except hvac.exceptions.InvalidPath as exc:
            raise KeyNotFound(f"transit key {self._name} not found") from exc
        except hvac.exceptions.InvalidRequest as exc:
            # e.g. the key was deleted or its min version raised past the pinned one.
            raise SignerUnavailable(f"vault transit refused to sign with {self._name}: {exc}") from exc
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc
        signature = _data(response).get("signature")
        match = _SIGNATURE.fullmatch(signature) if isinstance(signature, str) else None
        if match is None:
            raise SignerUnavailable("vault transit returned a malformed signature")
        if int(match.group(1)) != self._version:
            raise SignerUnavailable(
                f"vault transit signed with v{match.group(1)}, pinned v{self._version}; refusing"
            )
        return base64.b64decode(match.group(2), validate=True)


def _data(response: object) -> dict[str, Any]:
    """The `data` object of a JSON 200 response; anything else means Vault misbehaved."""
    if isinstance(response, dict):
        data = response.get("data")
        if isinstance(data, dict):
            return data
    raise SignerUnavailable("vault transit returned an unexpected response")


def _refuse(operation: str) -> NoReturn:
    raise PrivateKeyNotExportable(operation)


class _Sealed:
    """What every Transit-backed key object shares: it signs through its TransitSigner and refuses to
    hand out private material, which never leaves Vault."""

    def __init__(self, signer: TransitSigner) -> None:
        self._signer = signer

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        _refuse("private_bytes")

    def __reduce__(self) -> NoReturn:
        _refuse("pickle")

    def __repr__(self) -> str:
        return f"<transit key {self._signer.key_ref}>"


class _TransitECKey(_Sealed, ec.EllipticCurvePrivateKey):
    def __init__(self, signer: TransitSigner, public: ec.EllipticCurvePublicKey) -> None:
        super().__init__(signer)
        self._public = public

    def sign(self, data: Buffer, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise ValueError("only ECDSA signatures are supported")
        digest, hash_name = _digest(bytes(data), signature_algorithm.algorithm)
        return self._signer.transit_sign(digest, hash_name, marshaling_algorithm="asn1")

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        _refuse("exchange")

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        _refuse("private_numbers")

    # A copy is just another handle on the same Vault key; it exposes nothing.
    def __copy__(self) -> ec.EllipticCurvePrivateKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> ec.EllipticCurvePrivateKey:
        return self


# Alias: RSAPrivateKey.sign names its parameter `padding`, shadowing the module.
_PKCS1v15 = padding.PKCS1v15
_AsymmetricPadding = padding.AsymmetricPadding


class _TransitRSAKey(_Sealed, rsa.RSAPrivateKey):
    def __init__(self, signer: TransitSigner, public: rsa.RSAPublicKey) -> None:
        super().__init__(signer)
        self._public = public

    def sign(
        self,
        data: bytes,
        padding: _AsymmetricPadding,
        algorithm: utils.Prehashed | hashes.HashAlgorithm | utils.NoDigestInfo,
    ) -> bytes:
        if not isinstance(padding, _PKCS1v15):
            raise ValueError(f"transit RSA signing supports PKCS1v15 only, not {padding.name}")
        if isinstance(algorithm, utils.NoDigestInfo):
            raise ValueError("transit RSA signing needs a DigestInfo hash")
        digest, hash_name = _digest(bytes(data), algorithm)
        return self._signer.transit_sign(digest, hash_name, signature_algorithm="pkcs1v15")

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def decrypt(self, ciphertext: bytes, padding: _AsymmetricPadding) -> bytes:
        _refuse("decrypt")

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        _refuse("private_numbers")

    def __copy__(self) -> rsa.RSAPrivateKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> rsa.RSAPrivateKey:
        return self


class _TransitEd25519Key(_Sealed, ed25519.Ed25519PrivateKey):
    def __init__(self, signer: TransitSigner, public: ed25519.Ed25519PublicKey) -> None:
        super().__init__(signer)
        self._public = public

    def sign(self, data: Buffer) -> bytes:
        # Pure Ed25519 hashes internally: Transit gets the message itself.
        return self._signer.transit_sign(bytes(data), None)

    def public_key(self) -> ed25519.Ed25519PublicKey:
        return self._public

    def private_bytes_raw(self) -> bytes:
        _refuse("private_bytes_raw")

    def __copy__(self) -> ed25519.Ed25519PrivateKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> ed25519.Ed25519PrivateKey:
        return self


def _wrap(signer: TransitSigner) -> CertificateIssuerPrivateKeyTypes:
    public = signer.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        return _TransitECKey(signer, public)
    if isinstance(public, rsa.RSAPublicKey):
        return _TransitRSAKey(signer, public)
    if isinstance(public, ed25519.Ed25519PublicKey):
        return _TransitEd25519Key(signer, public)
    raise ValueError(f"unsupported transit key: {type(public).__name__}")


def _parse_public_key(key_type: str, encoded: str) -> CertificateIssuerPublicKeyTypes:
    # Transit returns PEM for ECDSA/RSA and base64 of the raw 32 bytes for Ed25519.
    if key_type == "ed25519":
        return ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(encoded, validate=True))
    public = serialization.load_pem_public_key(encoded.encode("ascii"))
    if not isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise ValueError(f"unexpected public key type {type(public).__name__}")
    return public


class TransitBackend:
    """Implements pki.signer.KeyBackend on a Transit mount. key_ref = "transit:<key name>@<version>"."""

    def __init__(self, client: hvac.Client, mount: str = "transit") -> None:
        if not _NAME.fullmatch(mount):
            raise ValueError(f"invalid transit mount {mount!r}")
        self._client = client
        self._mount = mount
        self._signers: dict[str, TransitSigner] = {}
        self._lock = threading.Lock()

    @classmethod
    def connect(cls, addr: str, token: str, mount: str = "transit", timeout: float = 5.0) -> TransitBackend:
        # types-hvac declares timeout as int; requests takes a float, so pass it untyped.
        options: dict[str, Any] = {"timeout": timeout}
        return cls(hvac.Client(url=addr, token=token, **options), mount)

    def create(self, algorithm: KeyAlgorithm, label: str) -> TransitSigner:
        name = f"{label}-{secrets.token_hex(4)}"
        if not _NAME.fullmatch(name):
            raise ValueError(f"invalid key label {label!r}: use [A-Za-z0-9._-]")
        body = {"type": _KEY_TYPES[algorithm], "exportable": False, "allow_plaintext_backup": False}
        try:
            self._client.adapter.post(f"/v1/{self._mount}/keys/{name}", json=body)
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc
        return self.load(f"{_REF_PREFIX}{name}@1")

    def load(self, key_ref: str) -> TransitSigner:
        with self._lock:
            cached = self._signers.get(key_ref)
            if cached is not None:
                return cached
            signer = self._read(key_ref)
            self._signers[key_ref] = signer
            return signer

    def _read(self, key_ref: str) -> TransitSigner:
        if not key_ref.startswith(_REF_PREFIX):
            raise KeyNotFound(f"not a transit key reference: {key_ref!r}")
        name, _, pinned = key_ref.removeprefix(_REF_PREFIX).partition("@")
        if not _NAME.fullmatch(name) or (pinned and not pinned.isdigit()):
            raise KeyNotFound(f"malformed transit key reference: {key_ref!r}")
        try:
            response = self._client.adapter.get(f"/v1/{self._mount}/keys/{name}")
        except (hvac.exceptions.InvalidPath, hvac.exceptions.InvalidRequest) as exc:
            raise KeyNotFound(f"transit key {name} not found") from exc
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc
        data = _data(response)
        key_type, latest, keys = data.get("type"), data.get("latest_version"), data.get("keys")
        if not (isinstance(key_type, str) and isinstance(latest, int) and isinstance(keys, dict)):
            raise SignerUnavailable(f"vault transit returned a malformed key description for {name}")
        if key_type not in _KEY_TYPES.values():
            raise KeyNotFound(f"transit key {name} has type {key_type}, not a signing key we support")
        version = int(pinned) if pinned else latest
        entry = keys.get(str(version))
        if entry is None and pinned:
            raise KeyNotFound(f"transit key {name} has no version {version}")
        encoded = entry.get("public_key") if isinstance(entry, dict) else None
        if not isinstance(encoded, str):
            raise SignerUnavailable(f"vault transit returned no public key for {name} v{version}")
        return TransitSigner(self._client, self._mount, name, version, _parse_public_key(key_type, encoded))

    def check(self) -> None:
        try:
            health = self._client.adapter.get("/v1/sys/health")
            if not isinstance(health, dict) or health.get("sealed") is not False:
                raise SignerUnavailable("vault is sealed or not initialised")
            # The token must still be valid, not just the server up.
            self._client.adapter.get("/v1/auth/token/lookup-self")
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc

    def close(self) -> None:
        self._client.adapter.close()
