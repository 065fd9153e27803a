"""Enrollment core against real software TPMs: EK chains, EK publics, AKs and MakeCredential.

Each swtpm carries an RSA-2048 EK and an ECC P-384 EK (tests/support/swtpm.py); tests run on both.
The key test seals a secret with `attest.credential.make_credential` in Python and has the real TPM
recover it with tpm2_activatecredential.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from attest.ak import check_attestation_key
from attest.alg import Alg
from attest.credential import make_credential, secrets_match
from attest.ek import VerifiedEk, check_ek_matches, verify_ek_certificate
from attest.errors import (
    ActivationSecretMismatch,
    EkCertificateExpired,
    EkCertificateNotYetValid,
    EkChainUntrusted,
    EkKeyMismatch,
)
from attest.public import parse_tpm2b_public, parse_tpmt_public
from tests.support.swtpm import EK_PROFILES, Kind, ManufacturerCa, RunningTpm
from tests.unit.vectors.attest.regenerate import (
    CREDENTIAL_MAGIC,
    HERE,
    activate,
    create_ak,
    read_ek_public,
    record,
    tpm2_tools_credential,
)

pytestmark = pytest.mark.integration

KINDS: tuple[Kind, ...] = ("rsa", "ecc")
OTHER: dict[Kind, Kind] = {"rsa": "ecc", "ecc": "rsa"}


def _pem(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _now() -> datetime:
    return datetime.now(UTC)


def verify(tpm: RunningTpm, kind: Kind, ca: ManufacturerCa, now: datetime | None = None) -> VerifiedEk:
    return verify_ek_certificate(
        tpm.read_nv(EK_PROFILES[kind].cert_nv_index),
        intermediates=[_pem(ca.intermediate_pem)],
        roots=[_pem(ca.root_pem)],
        now=now or _now(),
    )


@pytest.mark.parametrize("kind", KINDS)
def test_ek_certificate_chains_to_pinned_manufacturer_root(
    tpm: RunningTpm, manufacturer: ManufacturerCa, kind: Kind
) -> None:
    verified = verify(tpm, kind, manufacturer)
    assert verified.root == _pem(manufacturer.root_pem)
    assert verified.chain[1] == _pem(manufacturer.intermediate_pem)
    assert len(verified.chain) == 3


@pytest.mark.parametrize("kind", KINDS)
def test_ek_certificate_against_rogue_root_is_untrusted(
    tpm: RunningTpm, manufacturer: ManufacturerCa, rogue_manufacturer: ManufacturerCa, kind: Kind
) -> None:
    with pytest.raises(EkChainUntrusted):
        verify_ek_certificate(
            tpm.read_nv(EK_PROFILES[kind].cert_nv_index),
            intermediates=[_pem(manufacturer.intermediate_pem), _pem(rogue_manufacturer.intermediate_pem)],
            roots=[_pem(rogue_manufacturer.root_pem)],
            now=_now(),
        )


@pytest.mark.parametrize("kind", KINDS)
def test_rogue_tpm_ek_certificate_is_untrusted(
    rogue_tpm: RunningTpm, manufacturer: ManufacturerCa, rogue_manufacturer: ManufacturerCa, kind: Kind
) -> None:
    # Even with the rogue intermediate offered, nothing leads to the pinned (trusted) root.
    with pytest.raises(EkChainUntrusted) as caught:
        verify_ek_certificate(
            rogue_tpm.read_nv(EK_PROFILES[kind].cert_nv_index),
            intermediates=[_pem(rogue_manufacturer.intermediate_pem), _pem(manufacturer.intermediate_pem)],
            roots=[_pem(manufacturer.root_pem)],
            now=_now(),
        )
    assert caught.value.code == "ek-chain-untrusted"
    assert caught.value.kind == "forbidden"


@pytest.mark.parametrize("kind", KINDS)
def test_ek_certificate_after_not_after_is_expired(
    tpm: RunningTpm, manufacturer: ManufacturerCa, kind: Kind
) -> None:
    leaf = x509.load_der_x509_certificate(tpm.read_nv(EK_PROFILES[kind].cert_nv_index))
    chain_end = min(leaf.not_valid_after_utc, _pem(manufacturer.intermediate_pem).not_valid_after_utc)
    with pytest.raises(EkCertificateExpired):
        verify(tpm, kind, manufacturer, now=chain_end + timedelta(seconds=1))


def test_ek_certificate_before_not_before_is_not_yet_valid(
    tpm: RunningTpm, manufacturer: ManufacturerCa
) -> None:
    leaf = x509.load_der_x509_certificate(tpm.read_nv(EK_PROFILES["ecc"].cert_nv_index))
    with pytest.raises(EkCertificateNotYetValid):
        verify(tpm, "ecc", manufacturer, now=leaf.not_valid_before_utc - timedelta(days=1))


@pytest.mark.parametrize("kind", KINDS)
def test_ek_public_matches_its_certificate_and_not_the_other(
    tpm: RunningTpm, manufacturer: ManufacturerCa, kind: Kind, tmp_path: Path
) -> None:
    verified = verify(tpm, kind, manufacturer)
    own = parse_tpm2b_public(read_ek_public(tpm, kind, tmp_path / "own.pub"))
    other = parse_tpm2b_public(read_ek_public(tpm, OTHER[kind], tmp_path / "other.pub"))
    check_ek_matches(verified, own)
    with pytest.raises(EkKeyMismatch):
        check_ek_matches(verified, other)


def test_tpmt_format_is_the_tpm2b_body(tpm: RunningTpm, tmp_path: Path) -> None:
    tpm2b = read_ek_public(tpm, "rsa", tmp_path / "ek.pub")
    tpm.tool("tpm2_readpublic", "-c", "0x81010001", "-f", "tpmt", "-o", tmp_path / "ek.tpmt")
    tpmt = (tmp_path / "ek.tpmt").read_bytes()
    assert tpm2b[2:] == tpmt
    assert parse_tpmt_public(tpmt).name() == parse_tpm2b_public(tpm2b).name()


@pytest.mark.parametrize("ek_kind", KINDS)
@pytest.mark.parametrize("ak_kind", KINDS)
def test_ak_name_matches_tpm2_tools_and_passes_checks(
    tpm: RunningTpm, ek_kind: Kind, ak_kind: Kind, tmp_path: Path
) -> None:
    ak = create_ak(tpm, ek_kind, ak_kind, tmp_path)
    public = parse_tpm2b_public(ak.public)
    assert public.name() == ak.name
    verified = check_attestation_key(public)
    assert verified.name == ak.name
    assert verified.scheme == (Alg.RSASSA if ak_kind == "rsa" else Alg.ECDSA)
    assert verified.hash_alg == Alg.SHA256


@pytest.mark.parametrize("kind", KINDS)
def test_make_credential_is_activated_by_the_real_tpm(
    tpm: RunningTpm, manufacturer: ManufacturerCa, kind: Kind, tmp_path: Path
) -> None:
    # The whole enrollment challenge: EK chain, EK public = certificate key, AK checks, the name
    # computed by the authority, MakeCredential in Python, ActivateCredential in the TPM.
    verified_ek = verify(tpm, kind, manufacturer)
    ek = parse_tpm2b_public(read_ek_public(tpm, kind, tmp_path / "ek.pub"))
    check_ek_matches(verified_ek, ek)
    ak = create_ak(tpm, kind, kind, tmp_path)
    verified_ak = check_attestation_key(parse_tpm2b_public(ak.public))
    secret = bytes.fromhex("5e" * 16) + bytes(range(16))

    made = make_credential(ek, verified_ak.name, secret)

    recovered = activate(tpm, kind, ek, ak, tpm2_tools_credential(made), tmp_path)
    assert recovered == secret
    secrets_match(secret, recovered)
    with pytest.raises(ActivationSecretMismatch):
        secrets_match(secret, bytes(32))


def test_make_credential_on_the_rsa_profile_tpm(rsa_tpm: RunningTpm, tmp_path: Path) -> None:
    ek = parse_tpm2b_public(read_ek_public(rsa_tpm, "rsa", tmp_path / "ek.pub"))
    ak = create_ak(rsa_tpm, "rsa", "ecc", tmp_path)
    secret = bytes(range(100, 132))
    made = make_credential(ek, parse_tpm2b_public(ak.public).name(), secret)
    assert activate(rsa_tpm, "rsa", ek, ak, tpm2_tools_credential(made), tmp_path) == secret


@pytest.mark.parametrize("kind", KINDS)
def test_credential_for_another_name_is_refused_by_the_tpm(
    tpm: RunningTpm, kind: Kind, tmp_path: Path
) -> None:
    ek = parse_tpm2b_public(read_ek_public(tpm, kind, tmp_path / "ek.pub"))
    ak = create_ak(tpm, kind, kind, tmp_path)
    other_name = ak.name[:2] + bytes(b ^ 0xFF for b in ak.name[2:])
    made = make_credential(ek, other_name, bytes(32))
    with pytest.raises(RuntimeError, match="tpm2_activatecredential"):
        activate(tpm, kind, ek, ak, tpm2_tools_credential(made), tmp_path)


@pytest.mark.parametrize("kind", KINDS)
def test_credential_file_layout_matches_tpm2_makecredential(
    tpm: RunningTpm, kind: Kind, tmp_path: Path
) -> None:
    # tpm2_makecredential in offline mode (--tcti none) writes the same layout we write; and the
    # TPM activates tpm2-tools' own credential for the same AK, so both sides agree.
    ek_pub = tmp_path / "ek.pub"
    ek = parse_tpm2b_public(read_ek_public(tpm, kind, ek_pub))
    ak = create_ak(tpm, kind, kind, tmp_path)
    secret = bytes(range(32))
    (tmp_path / "secret.bin").write_bytes(secret)
    theirs = tmp_path / "theirs.out"
    tpm.tool(
        "tpm2_makecredential",
        "--tcti",
        "none",
        "-u",
        ek_pub,
        "-s",
        tmp_path / "secret.bin",
        "-n",
        ak.name.hex(),
        "-o",
        theirs,
    )
    ours = tpm2_tools_credential(make_credential(ek, ak.name, secret))
    their_bytes = theirs.read_bytes()
    assert int.from_bytes(their_bytes[:4], "big") == CREDENTIAL_MAGIC
    assert their_bytes[:8] == ours[:8]
    assert len(their_bytes) == len(ours)
    # Same TPM2B sizes at the same offsets (HMAC size, then encrypted-secret size).
    id_size = int.from_bytes(ours[8:10], "big")
    assert their_bytes[8:12] == ours[8:12]
    assert their_bytes[10 + id_size : 12 + id_size] == ours[10 + id_size : 12 + id_size]
    assert activate(tpm, kind, ek, ak, their_bytes, tmp_path) == secret


def test_regenerated_vectors_have_the_recorded_shape(tmp_path: Path) -> None:
    """The regeneration script still produces what the unit tests were recorded from."""
    fresh = tmp_path / "vectors"
    record(fresh, tmp_path / "scratch")
    recorded_files = sorted(p.name for p in HERE.iterdir() if p.suffix != ".py" and p.is_file())
    assert sorted(p.name for p in fresh.iterdir()) == recorded_files
    for name in ("ak-rsa.pub", "ak-ecc.pub", "ek-rsa.pub", "ek-ecc.pub"):
        old = parse_tpm2b_public((HERE / name).read_bytes())
        new = parse_tpm2b_public((fresh / name).read_bytes())
        assert (old.type, old.name_alg, old.attributes, old.parameters, old.auth_policy) == (
            new.type,
            new.name_alg,
            new.attributes,
            new.parameters,
            new.auth_policy,
        ), name
    for name in ("ak-rsa.name", "ak-ecc.name"):
        assert len((HERE / name).read_bytes()) == len((fresh / name).read_bytes())
    old_cred = json.loads((HERE / "credential-ecc.json").read_text())
    new_cred = json.loads((fresh / "credential-ecc.json").read_text())
    assert old_cred.keys() == new_cred.keys()
    assert {k: len(v) for k, v in old_cred.items()} == {k: len(v) for k, v in new_cred.items()}
