"""File key backend: PKCS#8 PEM keys encrypted with a passphrase, one file per key under a 0700 directory."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
)

from pki.errors import KeyNotFound, SignerUnavailable
from pki.signer import KeyAlgorithm, Signer, algorithm_of

_PREFIX = "file:"
# Labels and refs become file names: a strict alphabet keeps them inside the directory.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_REF_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}-[0-9a-f]{16}")


@dataclass(frozen=True)
class FileSigner:
    """A key held in memory after decryption. Implements pki.signer.Signer."""

    key_ref: str
    algorithm: KeyAlgorithm
    key: CertificateIssuerPrivateKeyTypes

    def public_key(self) -> CertificateIssuerPublicKeyTypes:
        return self.key.public_key()

    def private_key(self) -> CertificateIssuerPrivateKeyTypes:
        # The real key: cryptography signs in-process with no round trip.
        return self.key


def _generate(algorithm: KeyAlgorithm) -> CertificateIssuerPrivateKeyTypes:
    if algorithm is KeyAlgorithm.EC_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm is KeyAlgorithm.EC_P384:
        return ec.generate_private_key(ec.SECP384R1())
    if algorithm is KeyAlgorithm.RSA_3072:
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    return ed25519.Ed25519PrivateKey.generate()


def _fingerprint(public_key: CertificateIssuerPublicKeyTypes) -> str:
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()[:16]


def _write_private(path: Path, data: bytes) -> None:
    """Write atomically: a 0600 temp file beside the target, then rename over it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


class FileKeyBackend:
    """Implements pki.signer.KeyBackend. key_ref = "file:<label>-<16 hex of sha256(SPKI DER)>"."""

    def __init__(self, directory: Path, passphrase: bytes) -> None:
        if not passphrase:
            raise ValueError("file keys need a non-empty passphrase")
        self.directory = directory
        self._passphrase = passphrase
        self._cache: dict[str, FileSigner] = {}
        self._lock = threading.Lock()
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def create(self, algorithm: KeyAlgorithm, label: str) -> Signer:
        if not _NAME.fullmatch(label):
            raise ValueError(f"key label {label!r} must match {_NAME.pattern}")
        key = _generate(algorithm)
        key_ref = f"{_PREFIX}{label}-{_fingerprint(key.public_key())}"
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(self._passphrase),
        )
        try:
            _write_private(self._path(key_ref), pem)
        except OSError as exc:
            raise SignerUnavailable(f"cannot write key file: {exc.strerror}") from exc
        signer = FileSigner(key_ref=key_ref, algorithm=algorithm, key=key)
        with self._lock:
            self._cache[key_ref] = signer
        return signer

    def load(self, key_ref: str) -> Signer:
        cached = self._cache.get(key_ref)
        if cached is not None:
            return cached
        path = self._path(key_ref)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise KeyNotFound(f"no key file for {key_ref}") from exc
        except OSError as exc:
            raise SignerUnavailable(f"cannot read key file for {key_ref}: {exc.strerror}") from exc
        try:
            key = serialization.load_pem_private_key(data, password=self._passphrase)
        except (ValueError, TypeError) as exc:
            # Wrong passphrase or a damaged file: the key exists but cannot be used.
            raise SignerUnavailable(f"cannot decrypt key file for {key_ref}") from exc
        if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
            raise SignerUnavailable(f"key file for {key_ref} holds an unsupported key type")
        try:
            algorithm = algorithm_of(key.public_key())
        except ValueError as exc:
            raise SignerUnavailable(f"key file for {key_ref}: {exc}") from exc
        if not key_ref.endswith(_fingerprint(key.public_key())):
            raise SignerUnavailable(f"key file for {key_ref} holds a different key")
        signer = FileSigner(key_ref=key_ref, algorithm=algorithm, key=key)
        with self._lock:
            self._cache[key_ref] = signer
        return signer

    def check(self) -> None:
        if not os.access(self.directory, os.R_OK | os.X_OK) or not self.directory.is_dir():
            raise SignerUnavailable(f"key directory {self.directory} is not readable")

    def close(self) -> None:
        with self._lock:
            self._cache.clear()

    def _path(self, key_ref: str) -> Path:
        if not key_ref.startswith(_PREFIX):
            raise KeyNotFound(f"{key_ref[:64]!r} is not a file key reference")
        name = key_ref.removeprefix(_PREFIX)
        # Refuse separators and '..' outright: a stored ref must never point outside the directory.
        if "/" in name or "\\" in name or ".." in name or os.sep in name or not _REF_NAME.fullmatch(name):
            raise KeyNotFound(f"{key_ref[:64]!r} is not a valid file key reference")
        return self.directory / f"{name}.pem"


def load_or_create_passphrase(path: Path, rand: Callable[[int], bytes] = os.urandom) -> bytes:
    """The data-dir secret used when settings give none: 32 random bytes, hex-encoded, in a 0600 file."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.exists():
        return _read_secret(path)
    secret = rand(32).hex().encode()
    # Written in full to an exclusive temp file, then hard-linked into place: a concurrent starter
    # either wins the link or reads a complete secret, never an empty file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secret)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, path)
    except FileExistsError:
        return _read_secret(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return secret


def _read_secret(path: Path) -> bytes:
    existing = path.read_bytes().strip()
    if not existing:
        raise SignerUnavailable(f"secret file {path} is empty")
    return existing
