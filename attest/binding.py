"""What a quote's extraData must be for a nonce: the nonce itself, or its binding to one tender."""

from __future__ import annotations

import hashlib


def tender_binding(nonce: bytes, tender: str, truck: str) -> bytes:
    """SHA-256(nonce ‖ tender ‖ 0x00 ‖ truck): a quote over it proves the truck's state for that tender
    only. Ids hold no NUL, so the separator keeps ("ab", "c") and ("a", "bc") apart; the nonce has a
    fixed length."""
    return hashlib.sha256(nonce + tender.encode() + b"\x00" + truck.encode()).digest()


def expected_extra_data(nonce: bytes, tender: str | None, truck: str) -> bytes:
    return tender_binding(nonce, tender, truck) if tender else nonce
