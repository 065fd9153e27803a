"""ASGI entry for uvicorn workers: each worker process reads the settings the CLI exported, once."""

from __future__ import annotations

import os

from litestar import Litestar

from api.app import create_app
from api.settings import load_settings


def app_from_env() -> Litestar:
    return create_app(load_settings(os.environ))
