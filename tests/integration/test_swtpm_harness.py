"""The software-TPM harness itself: manufacturer CAs, provisioned EK certificates, start and stop.

Everything here talks to real swtpm processes through the tpm2-tools `swtpm` TCTI and checks the
certificates with the real `openssl verify`, so the later enrollment tests can rely on the fleet.
Fixtures come from tests/support/swtpm_fixtures.py (registered in tests/conftest.py).
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ObjectIdentifier

from tests.support.swtpm import (
    EK_PROFILES,
    PLATFORM_CERT_NV_INDEX,
    SCRIPTS,
    Kind,
    ManufacturerCa,
    RunningTpm,
    manufacturer_ca,
    provision,
    require_swtpm,
    running_tpms,
    start,
    stop,
)

pytestmark = pytest.mark.integration

TCG_KP_EK_CERTIFICATE = ObjectIdentifier("2.23.133.8.1")
TCG_AT_TPM_MANUFACTURER = ObjectIdentifier("2.23.133.2.1")


@pytest.fixture(params=["tpm", "rsa_tpm"])
def any_tpm(request: pytest.FixtureRequest) -> RunningTpm:
    """Each test taking this runs once on an ECC-EK TPM and once on an RSA-EK TPM."""
    running: RunningTpm = request.getfixturevalue(request.param)
    return running


def ek_certificate(tpm: RunningTpm) -> x509.Certificate:
    # Strict DER parse: trailing bytes after the certificate in the NV index would raise.
    return x509.load_der_x509_certificate(tpm.read_nv(tpm.ek.cert_nv_index))


def openssl_verify(cert: x509.Certificate, root: Path, intermediate: Path, tmp_path: Path) -> bool:
    """`openssl verify` of an EK certificate against one root, the intermediate as untrusted.

    No -purpose is given, so openssl checks the chain (signatures, validity, CA:true and
    pathlen:0 on the issuers) but no extended key usage: EK certificates carry only the TCG EKU
    tcg-kp-EKCertificate (2.23.133.8.1), which matches none of openssl's purposes and would fail
    e.g. `-purpose sslclient`. Their critical subjectAltName (a directoryName of TPM manufacturer,
    model and version attributes) is an extension openssl knows, so no flag is needed for it.
    """
    pem = tmp_path / f"ek-{cert.serial_number}.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", str(root), "-untrusted", str(intermediate), str(pem)],
        capture_output=True,
        text=True,
        check=False,
    )
    ok = result.returncode == 0
    assert ok == (result.stdout.strip() == f"{pem}: OK"), result.stdout + result.stderr
    return ok


def spki(key: object) -> bytes:
    assert isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_manufacturer_ca_is_root_plus_pathlen0_intermediate(manufacturer: ManufacturerCa) -> None:
    root = x509.load_pem_x509_certificate(manufacturer.root_pem.read_bytes())
    intermediate = x509.load_pem_x509_certificate(manufacturer.intermediate_pem.read_bytes())
    chain = x509.load_pem_x509_certificates(manufacturer.chain_pem.read_bytes())

    assert root.issuer == root.subject
    root_bc = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert root_bc.critical and root_bc.value.ca
    assert intermediate.issuer == root.subject
    intermediate.verify_directly_issued_by(root)
    bc = intermediate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    assert chain == [intermediate, root]
    assert "acme-tpm" in intermediate.subject.rfc4514_string()


def test_ek_certificate_in_nv_is_an_ek_certificate(any_tpm: RunningTpm, manufacturer: ManufacturerCa) -> None:
    cert = ek_certificate(any_tpm)
    intermediate = x509.load_pem_x509_certificate(manufacturer.intermediate_pem.read_bytes())

    assert cert.public_bytes(serialization.Encoding.DER) == any_tpm.state.ek_cert_der()
    assert cert.issuer == intermediate.subject
    cert.verify_directly_issued_by(intermediate)
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert TCG_KP_EK_CERTIFICATE in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical  # the subject is not the TPM's name: the critical SAN is (TCG EK profile)
    (tpm_name,) = san.value.get_values_for_type(x509.DirectoryName)
    assert tpm_name.get_attributes_for_oid(TCG_AT_TPM_MANUFACTURER)
    key = cert.public_key()
    if any_tpm.ek.kind == "ecc":
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert isinstance(key.curve, ec.SECP384R1)
    else:
        assert isinstance(key, rsa.RSAPublicKey)
        assert key.key_size == 2048


def test_ek_certificate_chains_to_trusted_manufacturer_root(
    any_tpm: RunningTpm, manufacturer: ManufacturerCa, tmp_path: Path
) -> None:
    cert = ek_certificate(any_tpm)
    assert openssl_verify(cert, manufacturer.root_pem, manufacturer.intermediate_pem, tmp_path)


def test_ek_certificate_does_not_chain_to_rogue_root(
    any_tpm: RunningTpm, manufacturer: ManufacturerCa, rogue_manufacturer: ManufacturerCa, tmp_path: Path
) -> None:
    cert = ek_certificate(any_tpm)
    assert not openssl_verify(
        cert, rogue_manufacturer.root_pem, rogue_manufacturer.intermediate_pem, tmp_path
    )
    # The genuine intermediate offered as untrusted does not help: the anchor is what counts.
    assert not openssl_verify(cert, rogue_manufacturer.root_pem, manufacturer.intermediate_pem, tmp_path)


def test_rogue_tpm_ek_does_not_chain_to_trusted_root(
    rogue_tpm: RunningTpm,
    manufacturer: ManufacturerCa,
    rogue_manufacturer: ManufacturerCa,
    tmp_path: Path,
) -> None:
    cert = ek_certificate(rogue_tpm)
    assert openssl_verify(cert, rogue_manufacturer.root_pem, rogue_manufacturer.intermediate_pem, tmp_path)
    assert not openssl_verify(cert, manufacturer.root_pem, manufacturer.intermediate_pem, tmp_path)
    assert not openssl_verify(cert, manufacturer.root_pem, rogue_manufacturer.intermediate_pem, tmp_path)


def test_ek_public_equals_certificate_key(any_tpm: RunningTpm, tmp_path: Path) -> None:
    cert_key = spki(ek_certificate(any_tpm).public_key())

    # Re-derive the EK from the TCG template, as an enrolling agent does. swtpm has no resource
    # manager, so the transient EK must be flushed by hand.
    try:
        any_tpm.tool(
            "tpm2_createek", "-c", "ek.ctx", "-G", any_tpm.ek.createek_alg, "-u", "ek.pub", cwd=tmp_path
        )
        any_tpm.tool("tpm2_readpublic", "-c", "ek.ctx", "-f", "pem", "-o", "ek.pem", cwd=tmp_path)
    finally:
        any_tpm.tool("tpm2_flushcontext", "-t")
    created = serialization.load_pem_public_key((tmp_path / "ek.pem").read_bytes())
    assert spki(created) == cert_key

    # swtpm_setup also left the EK persistent at the TCG handle.
    handle = f"0x{any_tpm.ek.persistent_handle:08x}"
    any_tpm.tool("tpm2_readpublic", "-c", handle, "-f", "pem", "-o", "persistent.pem", cwd=tmp_path)
    assert spki(serialization.load_pem_public_key((tmp_path / "persistent.pem").read_bytes())) == cert_key
    assert b"0x" not in any_tpm.tool("tpm2_getcap", "handles-transient")


def test_nv_holds_both_ek_certificates_and_a_platform_certificate(any_tpm: RunningTpm) -> None:
    indices = any_tpm.tool("tpm2_getcap", "handles-nv-index").decode().lower()
    for kind, profile in EK_PROFILES.items():
        assert f"0x{profile.cert_nv_index:x}" in indices
        assert any_tpm.read_nv(profile.cert_nv_index) == any_tpm.state.ek_cert_der(kind)
    assert f"0x{PLATFORM_CERT_NV_INDEX:x}" in indices
    # --lock-nvram: the indices the manufacturer wrote are write-locked.
    public = any_tpm.tool("tpm2_nvreadpublic", f"0x{any_tpm.ek.cert_nv_index:08x}").decode()
    assert "writelocked" in public


@pytest.mark.parametrize("kind", ["ecc", "rsa"])
def test_distinct_tpms_have_distinct_eks(kind: Kind, manufacturer: ManufacturerCa, tmp_path: Path) -> None:
    with running_tpms(tmp_path / "distinct", manufacturer, 2, kind, distinct=True) as (a, b):
        cert_a, cert_b = ek_certificate(a), ek_certificate(b)
        assert spki(cert_a.public_key()) != spki(cert_b.public_key())
        assert cert_a.serial_number != cert_b.serial_number
        for t, c in ((a, cert_a), (b, cert_b)):
            assert openssl_verify(c, manufacturer.root_pem, manufacturer.intermediate_pem, tmp_path)
            assert t.state_dir != (a if t is b else b).state_dir


def test_copied_states_share_the_ek_but_run_apart(manufacturer: ManufacturerCa, tmp_path: Path) -> None:
    with running_tpms(tmp_path / "copies", manufacturer, 3, "ecc") as tpms:
        assert len({t.port for t in tpms}) == 3
        assert len({t.state_dir for t in tpms}) == 3
        assert len({t.pid for t in tpms}) == 3
        assert len({t.read_nv(t.ek.cert_nv_index) for t in tpms}) == 1


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket in LISTEN on `port` (IPv4 and IPv6), from /proc/net."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, _, hex_port = fields[1].partition(":")
            if int(hex_port, 16) == port and fields[3] == "0A":
                found.add(address)
    return found


def test_tpm_listens_on_loopback_only(tpm: RunningTpm) -> None:
    for port in (tpm.port, tpm.ctrl_port):
        assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1, little-endian hex


def test_stop_leaves_no_swtpm_behind(manufacturer: ManufacturerCa, tmp_path: Path) -> None:
    with running_tpms(tmp_path / "stop", manufacturer, 2, "ecc") as tpms:
        assert all(t.is_running() for t in tpms)
        started = list(tpms)
    for t in started:
        assert not t.is_running()
        assert not (t.state_dir / "swtpm.pid").exists()
        assert not _listening_addresses(t.port) and not _listening_addresses(t.ctrl_port)
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", t.port), 1):
            pass


def test_tpms_stop_when_the_body_raises(manufacturer: ManufacturerCa, tmp_path: Path) -> None:
    started: list[RunningTpm] = []
    with pytest.raises(LookupError), running_tpms(tmp_path / "raise", manufacturer, 2, "rsa") as tpms:
        started.extend(tpms)
        raise LookupError("boom")
    assert len(started) == 2
    assert not any(t.is_running() for t in started)


def test_provision_is_idempotent_and_a_stopped_tpm_restarts_with_its_ek(
    manufacturer: ManufacturerCa, tmp_path: Path
) -> None:
    state = provision(tmp_path / "again", manufacturer, "ecc")
    permall = (state.state_dir / "tpm2-00.permall").read_bytes()
    assert provision(tmp_path / "again", manufacturer, "ecc") == state
    assert (state.state_dir / "tpm2-00.permall").read_bytes() == permall

    first = start(state)
    try:
        cert = first.read_nv(first.ek.cert_nv_index)
    finally:
        stop([first])
    second = start(state)
    try:
        assert second.read_nv(second.ek.cert_nv_index) == cert
    finally:
        stop([second])
    assert not second.is_running()


def test_start_refuses_bad_port_and_unprovisioned_dir(tmp_path: Path) -> None:
    bad_port = subprocess.run(
        [SCRIPTS / "start-tpm.sh", tmp_path, "65535"], capture_output=True, text=True, check=False
    )
    assert bad_port.returncode == 2 and "PORT" in bad_port.stderr
    empty = subprocess.run(
        [SCRIPTS / "start-tpm.sh", tmp_path, "4000"], capture_output=True, text=True, check=False
    )
    assert empty.returncode == 1 and "provision" in empty.stderr
    assert not (tmp_path / "swtpm.pid").exists()


def test_manufacturer_ca_is_idempotent(tmp_path: Path) -> None:
    first = manufacturer_ca(tmp_path / "ca", "idem-tpm")
    before = {p.name: p.read_bytes() for p in first.dir.iterdir()}
    second = manufacturer_ca(tmp_path / "ca", "idem-tpm")
    assert second == first
    assert {p.name: p.read_bytes() for p in second.dir.iterdir()} == before


def test_require_swtpm_fails_loudly_without_the_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    require_swtpm()
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RuntimeError, match=r"swtpm.*apt-get install swtpm swtpm-tools tpm2-tools"):
        require_swtpm()
