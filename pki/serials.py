"""Certificate serial numbers: 159 random bits, so the DER INTEGER stays positive and within 20 bytes."""

from __future__ import annotations

import os
from collections.abc import Callable

_BITS = 159


def random_serial(rand: Callable[[int], bytes] = os.urandom) -> int:
    """A positive, nonzero serial below 2**159 (RFC 5280 §4.1.2.2: at most 20 octets)."""
    while True:
        # 20 bytes drawn, top bit dropped: 159 bits of entropy, never negative in DER.
        value = int.from_bytes(rand(20), "big") >> (160 - _BITS)
        if value:
            return value
