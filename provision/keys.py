"""Choose the key backend from settings: OpenBao/Vault Transit when an address is given, else file keys."""

from __future__ import annotations

from pathlib import Path

from pki.filekeys import FileKeyBackend, load_or_create_passphrase
from pki.signer import KeyBackend
from provision.transit import TransitBackend


def open_key_backend(
    *, data_dir: Path, passphrase: str, vault_addr: str, vault_token: str, vault_mount: str
) -> KeyBackend:
    if vault_addr:
        return TransitBackend.connect(vault_addr, vault_token, mount=vault_mount)
    secret = (
        passphrase.encode()
        if passphrase
        else load_or_create_passphrase(data_dir / "secrets" / "key-passphrase")
    )
    return FileKeyBackend(data_dir / "keys", secret)
