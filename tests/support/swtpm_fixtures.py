"""pytest fixtures for software TPMs (swtpm) and their manufacturer CAs.

Enable with `pytest_plugins = [..., "tests.support.swtpm_fixtures"]` in tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.swtpm import ManufacturerCa, RunningTpm, manufacturer_ca, running_tpms


@pytest.fixture(scope="session")
def manufacturer(tmp_path_factory: pytest.TempPathFactory) -> ManufacturerCa:
    """The trusted TPM manufacturer ("acme-tpm"): its root is the one the authority pins."""
    return manufacturer_ca(tmp_path_factory.mktemp("manufacturer") / "acme-tpm", "acme-tpm")


@pytest.fixture(scope="session")
def rogue_manufacturer(tmp_path_factory: pytest.TempPathFactory) -> ManufacturerCa:
    """An untrusted manufacturer ("rogue-tpm") for negative tests: same shape, unpinned root."""
    return manufacturer_ca(tmp_path_factory.mktemp("manufacturer") / "rogue-tpm", "rogue-tpm")


@pytest.fixture
def tpm(tmp_path: Path, manufacturer: ManufacturerCa) -> Iterator[RunningTpm]:
    """One running TPM of the trusted manufacturer, ECC (P-384) EK; fresh state per test."""
    with running_tpms(tmp_path / "tpms", manufacturer, 1, "ecc") as (running,):
        yield running


@pytest.fixture
def rsa_tpm(tmp_path: Path, manufacturer: ManufacturerCa) -> Iterator[RunningTpm]:
    """One running TPM of the trusted manufacturer, RSA-2048 EK; fresh state per test."""
    with running_tpms(tmp_path / "rsa-tpms", manufacturer, 1, "rsa") as (running,):
        yield running


@pytest.fixture
def rogue_tpm(tmp_path: Path, rogue_manufacturer: ManufacturerCa) -> Iterator[RunningTpm]:
    """One running TPM whose EK certificate the rogue manufacturer signed."""
    with running_tpms(tmp_path / "rogue-tpms", rogue_manufacturer, 1, "ecc") as (running,):
        yield running
