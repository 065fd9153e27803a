"""pytest fixtures for real external services (OpenBao)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.openbao import OpenBao, running_openbao


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    """One OpenBao dev server (transit mounted at "transit") shared by the session."""
    with running_openbao(tmp_path_factory.mktemp("openbao")) as server:
        yield server


@pytest.fixture
def fresh_openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    """A server of the test's own, for tests that stop or break it."""
    with running_openbao(tmp_path_factory.mktemp("openbao-fresh")) as server:
        yield server
