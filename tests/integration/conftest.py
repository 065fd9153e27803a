from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import scratch_database
from tests.support.service import RunningService, running_service
from tests.support.swtpm import ManufacturerCa


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """The service on its embedded default: SQLite and file keys in a fresh data dir."""
    with running_service(tmp_path_factory.mktemp("ws") / "data") as running:
        yield running


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with scratch_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each test that asks for it runs twice: on a fresh SQLite file and on a scratch PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ws.db'}"
    else:
        with scratch_database() as url:
            yield url


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(scope="module")
def enrolling(
    tmp_path_factory: pytest.TempPathFactory, manufacturer: ManufacturerCa
) -> Iterator[RunningService]:
    """The service with the trusted TPM manufacturer's root pinned and its intermediate configured."""
    env = {
        "WEIGHSTATION_TPM_MANUFACTURER_ROOTS": str(manufacturer.root_pem),
        "WEIGHSTATION_TPM_MANUFACTURER_INTERMEDIATES": str(manufacturer.intermediate_pem),
    }
    with running_service(tmp_path_factory.mktemp("enroll") / "data", env) as running:
        yield running
