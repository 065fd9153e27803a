"""Loading the recorded tlog vectors. Each JSON file names where its values came from ("source")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def vectors(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((HERE / name).read_text(encoding="utf-8"))
    return data


def hexes(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]
