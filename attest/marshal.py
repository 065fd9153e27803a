"""Strict big-endian reading and writing of TPM 2.0 wire structures (TPM 2.0 Part 2 §5, §10).

`Reader` never guesses: reading past the end raises `MalformedStructure`, and `finish()` refuses
any trailing byte, so a structure that parses is exactly the structure the TPM produced.
"""

from __future__ import annotations

import struct

from attest.errors import MalformedStructure


class Reader:
    """A cursor over one TPM structure. Every read consumes bytes or raises MalformedStructure."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = bytes(data)
        self._offset = 0
        self.what = what

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def remaining(self) -> int:
        return len(self._data) - self._offset

    def take(self, n: int) -> bytes:
        if n < 0 or n > self.remaining:
            raise MalformedStructure(
                f"{self.what}: truncated at offset {self._offset} (wanted {n} bytes, {self.remaining} left)"
            )
        out = self._data[self._offset : self._offset + n]
        self._offset += n
        return out

    def _unpack(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        value: int = struct.unpack(fmt, self.take(size))[0]
        return value

    def u8(self) -> int:
        return self._unpack(">B")

    def u16(self) -> int:
        return self._unpack(">H")

    def u32(self) -> int:
        return self._unpack(">I")

    def u64(self) -> int:
        return self._unpack(">Q")

    def tpm2b(self, max_size: int | None = None) -> bytes:
        """A TPM2B: a u16 size then that many bytes (optionally at most `max_size`)."""
        size = self.u16()
        if max_size is not None and size > max_size:
            raise MalformedStructure(f"{self.what}: TPM2B of {size} bytes exceeds its maximum of {max_size}")
        return self.take(size)

    def consumed(self, start: int) -> bytes:
        """The exact bytes read since offset `start`."""
        return self._data[start : self._offset]

    def finish(self) -> None:
        """Refuse trailing bytes."""
        if self.remaining:
            raise MalformedStructure(
                f"{self.what}: {self.remaining} trailing byte(s) after offset {self._offset}"
            )


def u16(value: int) -> bytes:
    return struct.pack(">H", value)


def u32(value: int) -> bytes:
    return struct.pack(">I", value)


def tpm2b(data: bytes) -> bytes:
    """Wrap `data` as a TPM2B (u16 size ‖ data)."""
    if len(data) > 0xFFFF:
        raise ValueError(f"{len(data)} bytes do not fit a TPM2B")
    return u16(len(data)) + data
