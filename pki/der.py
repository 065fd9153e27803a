"""A small DER encoder for the structures cryptography does not build (RFC 3161 / CMS SignedData).

Only what those structures need: definite lengths, minimal INTEGERs, OIDs, OCTET STRINGs, BOOLEAN,
GeneralizedTime, SEQUENCE, SET OF (sorted, as DER requires) and context tags. Encoding only: every
value we emit is parsed back by cryptography or the relying party's library, never by us.
"""

from __future__ import annotations

from datetime import UTC, datetime

SEQUENCE = 0x30
SET = 0x31


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _length(len(content)) + content


def sequence(*items: bytes) -> bytes:
    return tlv(SEQUENCE, b"".join(items))


def set_of(*items: bytes) -> bytes:
    # X.690 §11.6: the elements of a DER SET OF are in ascending order of their encodings.
    return tlv(SET, b"".join(sorted(items)))


def integer(value: int) -> bytes:
    if value < 0:
        raise ValueError("only non-negative INTEGERs are encoded here")
    raw = value.to_bytes(value.bit_length() // 8 + 1, "big")  # one spare byte keeps the sign bit 0
    while len(raw) > 1 and raw[0] == 0 and raw[1] < 0x80:
        raw = raw[1:]
    return tlv(0x02, raw)


def boolean(value: bool) -> bytes:
    return tlv(0x01, b"\xff" if value else b"\x00")


def octet_string(data: bytes) -> bytes:
    return tlv(0x04, data)


def utf8_string(text: str) -> bytes:
    return tlv(0x0C, text.encode("utf-8"))


def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] >= 40):
        raise ValueError(f"not an object identifier: {dotted}")
    body = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        rest = arc >> 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        body += bytes(reversed(chunk))
    return tlv(0x06, bytes(body))


def generalized_time(moment: datetime) -> bytes:
    """DER GeneralizedTime: UTC, 'Z', whole seconds (X.690 §11.7; RFC 3161 allows no fraction here)."""
    if moment.tzinfo is None:
        raise ValueError("a GeneralizedTime needs an aware datetime")
    return tlv(0x18, moment.astimezone(UTC).strftime("%Y%m%d%H%M%SZ").encode("ascii"))


def explicit(number: int, content: bytes) -> bytes:
    """[number] EXPLICIT: a constructed context tag around a complete encoding."""
    return tlv(0xA0 | number, content)


def implicit_constructed(number: int, encoded: bytes) -> bytes:
    """[number] IMPLICIT over a constructed type: replace the tag of `encoded`, keep its content."""
    tag_len = 1
    length_byte = encoded[tag_len]
    header = tag_len + 1 + (length_byte & 0x7F if length_byte & 0x80 else 0)
    return tlv(0xA0 | number, encoded[header:])


def algorithm(dotted: str) -> bytes:
    """AlgorithmIdentifier with absent parameters (RFC 5754 §2 for SHA-2, RFC 5758 §3.2 for ECDSA)."""
    return sequence(oid(dotted))
