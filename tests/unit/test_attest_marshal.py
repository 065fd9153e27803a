"""attest.marshal: the strict reader every TPM structure goes through."""

from __future__ import annotations

import pytest

from attest.errors import MalformedStructure
from attest.marshal import Reader, tpm2b


def test_reads_big_endian_integers_and_sized_buffers() -> None:
    r = Reader(bytes.fromhex("01 0203 04050607 08090a0b0c0d0e0f 0002 aabb"), "test")
    assert r.u8() == 0x01
    assert r.u16() == 0x0203
    assert r.u32() == 0x04050607
    assert r.u64() == 0x08090A0B0C0D0E0F
    assert r.tpm2b() == b"\xaa\xbb"
    r.finish()


def test_truncated_integer_raises() -> None:
    r = Reader(b"\x00\x01\x02", "test")
    with pytest.raises(MalformedStructure, match="truncated"):
        r.u32()


def test_truncated_tpm2b_raises() -> None:
    with pytest.raises(MalformedStructure, match="truncated"):
        Reader(b"\x00\x05abc", "test").tpm2b()


def test_tpm2b_over_its_maximum_raises() -> None:
    with pytest.raises(MalformedStructure, match="maximum"):
        Reader(b"\x00\x03abc", "test").tpm2b(max_size=2)


def test_finish_refuses_trailing_bytes() -> None:
    r = Reader(b"\x00\x01\xff", "test")
    r.u16()
    with pytest.raises(MalformedStructure, match="trailing") as caught:
        r.finish()
    assert caught.value.code == "malformed-tpm-structure"
    assert caught.value.kind == "invalid"


def test_tpm2b_writer_round_trips() -> None:
    assert Reader(tpm2b(b"xyz"), "test").tpm2b() == b"xyz"
    with pytest.raises(ValueError, match="TPM2B"):
        tpm2b(bytes(0x10000))
