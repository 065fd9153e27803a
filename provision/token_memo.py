"""Access tokens already verified, by their exact text.

A client sends the same access token on every call until it expires; checking its ES256 signature and
parsing it three times over (header, claims, signature) is most of what authenticating a call costs.
A token's signature is a property of its bytes and the key, so the claims verified once from these exact
bytes hold for as long as the token is in date and its key is still published: a hit re-checks both
(against the wall clock, as the JWT library does) and anything else goes through full verification,
which also words the refusal. Bounded: cleared when full.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Generic, TypeVar

Claims = TypeVar("Claims")


@dataclass(frozen=True, slots=True)
class Verified(Generic[Claims]):
    claims: Claims
    kid: str
    not_before: int  # nbf and iat: the token is refused before the later of the two
    expires: int  # exp: refused from this instant on

    def in_date(self, now: float) -> bool:
        return self.not_before <= now < self.expires


class VerifiedTokens(Generic[Claims]):
    def __init__(self, size: int = 8192) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._tokens: dict[str, Verified[Claims]] = {}

    def get(self, token: str) -> Verified[Claims] | None:
        return self._tokens.get(token)

    def put(self, token: str, verified: Verified[Claims]) -> None:
        with self._lock:
            if len(self._tokens) >= self._size:
                self._tokens = {}
            self._tokens[token] = verified
