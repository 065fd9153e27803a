from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from pki.errors import KeyNotFound, SignerUnavailable
from pki.filekeys import FileKeyBackend, FileSigner, load_or_create_passphrase
from pki.signer import KeyAlgorithm, Signer


@pytest.mark.parametrize("algorithm", list(KeyAlgorithm))
def test_create_then_load_from_a_fresh_backend(tmp_path: Path, algorithm: KeyAlgorithm) -> None:
    signer = FileKeyBackend(tmp_path / "keys", b"pw").create(algorithm, "issuing-ca")
    assert isinstance(signer, Signer)
    assert signer.key_ref.startswith("file:issuing-ca-")
    assert len(signer.key_ref.removeprefix("file:issuing-ca-")) == 16

    loaded = FileKeyBackend(tmp_path / "keys", b"pw").load(signer.key_ref)
    assert loaded.algorithm is algorithm
    assert loaded.public_key() == signer.public_key()


def test_key_file_is_encrypted_0600_in_a_0700_directory(tmp_path: Path) -> None:
    backend = FileKeyBackend(tmp_path / "keys", b"pw")
    signer = backend.create(KeyAlgorithm.EC_P256, "root-ca")
    (path,) = (tmp_path / "keys").iterdir()
    assert path.name == signer.key_ref.removeprefix("file:") + ".pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert b"ENCRYPTED PRIVATE KEY" in path.read_bytes()


def test_private_key_is_the_real_key(tmp_path: Path) -> None:
    signer = FileKeyBackend(tmp_path, b"pw").create(KeyAlgorithm.EC_P256, "k")
    assert isinstance(signer, FileSigner)
    key = signer.private_key()
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    key.public_key().verify(key.sign(b"m", ec.ECDSA(hashes.SHA256())), b"m", ec.ECDSA(hashes.SHA256()))


def test_repeated_load_is_cached(tmp_path: Path) -> None:
    ref = FileKeyBackend(tmp_path, b"pw").create(KeyAlgorithm.EC_P256, "k").key_ref
    backend = FileKeyBackend(tmp_path, b"pw")
    assert backend.load(ref) is backend.load(ref)


def test_wrong_passphrase_is_unavailable(tmp_path: Path) -> None:
    ref = FileKeyBackend(tmp_path, b"pw").create(KeyAlgorithm.EC_P256, "k").key_ref
    with pytest.raises(SignerUnavailable):
        FileKeyBackend(tmp_path, b"other").load(ref)


def test_missing_key_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(KeyNotFound):
        FileKeyBackend(tmp_path, b"pw").load("file:root-ca-0123456789abcdef")


def test_non_file_key_ref_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(KeyNotFound):
        FileKeyBackend(tmp_path, b"pw").load("transit:root-ca@1")


@pytest.mark.parametrize(
    "ref", ["file:../root-ca-0123456789abcdef", "file:..", "file:a/b-0123456789abcdef", "file:/etc/passwd"]
)
def test_file_key_ref_with_dotdot_or_separator_is_refused(tmp_path: Path, ref: str) -> None:
    with pytest.raises(KeyNotFound):
        FileKeyBackend(tmp_path / "keys", b"pw").load(ref)


def test_label_with_path_separator_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="label"):
        FileKeyBackend(tmp_path, b"pw").create(KeyAlgorithm.EC_P256, "../evil")


def test_check_fails_when_directory_is_gone(tmp_path: Path) -> None:
    backend = FileKeyBackend(tmp_path / "keys", b"pw")
    backend.check()
    (tmp_path / "keys").rmdir()
    with pytest.raises(SignerUnavailable):
        backend.check()


def test_close_drops_cached_keys(tmp_path: Path) -> None:
    backend = FileKeyBackend(tmp_path, b"pw")
    signer = backend.create(KeyAlgorithm.EC_P256, "k")
    backend.close()
    assert backend.load(signer.key_ref) is not signer


def test_passphrase_created_once_0600_then_reread(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "key-passphrase"
    first = load_or_create_passphrase(path, rand=lambda n: b"\x01" * n)
    assert first == b"01" * 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_or_create_passphrase(path, rand=lambda n: b"\x02" * n) == first
    assert [p.name for p in path.parent.iterdir()] == ["key-passphrase"]  # no temp files left


def test_empty_passphrase_file_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"")
    with pytest.raises(SignerUnavailable):
        load_or_create_passphrase(path)
