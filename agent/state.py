"""What a truck keeps between runs: its TPM key blobs, which EK they hang under, its certificate.

The blobs are useless off the TPM that made them (the private part is wrapped by the EK), but the
files are still written 0600 in a 0700 directory: `state.json` plus one binary file per blob.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from cryptography import x509

EkKind = Literal["rsa", "ecc"]
EK_KINDS: tuple[EkKind, ...] = ("rsa", "ecc")

_TPM_ALG_SHA256 = 0x000B
_STATE_FILE = "state.json"
_VERSION = 1


class StateError(ValueError):
    """The state directory is missing, malformed, or its blobs do not match their names."""


def tpm_name(public: bytes) -> bytes:
    """The TPM Name of an object from its marshalled TPMT_PUBLIC: nameAlg ‖ H_nameAlg(public).

    Only SHA-256 names are produced by this agent, so only they are computed here.
    """
    # TPMT_PUBLIC starts with type (UINT16) then nameAlg (UINT16).
    if len(public) < 4:
        raise StateError("TPMT_PUBLIC too short")
    name_alg = int.from_bytes(public[2:4], "big")
    if name_alg != _TPM_ALG_SHA256:
        raise StateError(f"unsupported nameAlg 0x{name_alg:04x}")
    return public[2:4] + hashlib.sha256(public).digest()


@dataclass(frozen=True)
class KeyBlob:
    """A TPM key created under an EK, loadable again with TPM2_Load.

    public: marshalled TPMT_PUBLIC; private: marshalled TPM2B_PRIVATE (opaque, EK-wrapped);
    name: the TPM Name (nameAlg ‖ SHA-256(public)); parent: which EK it was created under.
    """

    public: bytes
    private: bytes
    name: bytes
    parent: EkKind


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_private_file(path: Path, data: bytes) -> None:
    """Replace `path` atomically with `data`, mode 0600 (for the agent's other state files)."""
    _write_private(path, data)


def _read(directory: Path, name: str) -> bytes:
    try:
        return (directory / name).read_bytes()
    except OSError as exc:
        raise StateError(f"cannot read {name}: {exc}") from exc


@dataclass(frozen=True)
class AgentState:
    """The truck's enrolled (or enrolling) identity: EK kind, AK, identity key, certificate chain."""

    ek_kind: EkKind
    ak: KeyBlob
    identity: KeyBlob
    certificate_pem: bytes | None = None  # leaf first, then the chain, as the authority returns it

    @property
    def truck(self) -> str:
        """The truck id in the enrolled certificate's SPIFFE ID (spiffe://<td>/fleet/<f>/truck/<id>)."""
        if self.certificate_pem is None:
            raise StateError("not enrolled: no certificate in the state")
        leaf = x509.load_pem_x509_certificate(self.certificate_pem)
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        for uri in sans.get_values_for_type(x509.UniformResourceIdentifier):
            _, marker, truck = uri.rpartition("/truck/")
            if marker and truck:
                return truck
        raise StateError("the certificate names no truck")

    def with_certificate(self, certificate_pem: bytes) -> AgentState:
        return replace(self, certificate_pem=certificate_pem)

    def save(self, directory: Path) -> None:
        """Write the state; blobs first, `state.json` last, each file replaced atomically."""
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        files: dict[str, str] = {}
        for label, blob in (("ak", self.ak), ("identity", self.identity)):
            _write_private(directory / f"{label}.pub", blob.public)
            _write_private(directory / f"{label}.priv", blob.private)
            files[label] = blob.name.hex()
        if self.certificate_pem is not None:
            _write_private(directory / "identity.crt", self.certificate_pem)
        document = {
            "version": _VERSION,
            "ek_kind": self.ek_kind,
            "ak": {"name": files["ak"], "parent": self.ak.parent},
            "identity": {"name": files["identity"], "parent": self.identity.parent},
            "certificate": self.certificate_pem is not None,
        }
        _write_private(directory / _STATE_FILE, json.dumps(document, indent=2).encode() + b"\n")

    @classmethod
    def load(cls, directory: Path) -> AgentState:
        """Read a state written by `save`; each blob's name is recomputed and must match."""
        try:
            document = json.loads(_read(directory, _STATE_FILE))
        except json.JSONDecodeError as exc:
            raise StateError(f"{_STATE_FILE} is not JSON: {exc}") from exc
        if not isinstance(document, dict) or document.get("version") != _VERSION:
            raise StateError(f"{_STATE_FILE}: unknown version")
        ek_kind = _ek_kind(document.get("ek_kind"))
        blobs = {label: _load_blob(directory, label, document.get(label)) for label in ("ak", "identity")}
        certificate = _read(directory, "identity.crt") if document.get("certificate") is True else None
        return cls(ek_kind=ek_kind, ak=blobs["ak"], identity=blobs["identity"], certificate_pem=certificate)


def _ek_kind(value: object) -> EkKind:
    for kind in EK_KINDS:
        if value == kind:
            return kind
    raise StateError(f"unknown EK kind {value!r}")


def _load_blob(directory: Path, label: str, entry: object) -> KeyBlob:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise StateError(f"{_STATE_FILE}: bad entry for {label}")
    public = _read(directory, f"{label}.pub")
    name = tpm_name(public)
    if name.hex() != entry["name"]:
        raise StateError(f"{label}.pub does not match the recorded name")
    return KeyBlob(
        public=public,
        private=_read(directory, f"{label}.priv"),
        name=name,
        parent=_ek_kind(entry.get("parent")),
    )


EVIDENCE_CERTIFICATE_FILE = "evidence.crt"


def save_evidence_certificate(directory: Path, certificate_pem: bytes) -> None:
    """Keep the evidence-signing certificate (leaf first, then its chain), replacing any older one."""
    _write_private(directory / EVIDENCE_CERTIFICATE_FILE, certificate_pem)


def load_evidence_certificate(directory: Path) -> bytes | None:
    """The evidence-signing certificate kept in the state dir, or None if the truck has none."""
    path = directory / EVIDENCE_CERTIFICATE_FILE
    if not path.exists():
        return None
    return _read(directory, EVIDENCE_CERTIFICATE_FILE)
