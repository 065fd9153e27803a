from __future__ import annotations

from collections.abc import Callable

from pki.serials import random_serial


def fixed(*chunks: bytes) -> Callable[[int], bytes]:
    queue = list(chunks)

    def rand(n: int) -> bytes:
        chunk = queue.pop(0)
        assert len(chunk) == n
        return chunk

    return rand


def test_serial_all_ones_stays_below_2_159() -> None:
    assert random_serial(fixed(b"\xff" * 20)) == 2**159 - 1


def test_serial_zero_draw_is_redrawn() -> None:
    assert random_serial(fixed(b"\x00" * 20, b"\x00" * 19 + b"\x02")) == 1


def test_serial_from_os_randomness_is_positive_and_fits_20_bytes() -> None:
    for _ in range(64):
        serial = random_serial()
        assert 0 < serial < 2**159
