"""Typed errors of the use cases that are not PKI errors; same shape as pki.errors (code, kind, reason)."""

from __future__ import annotations

from typing import ClassVar

from pki.errors import ErrorKind


class ProvisionError(Exception):
    code: ClassVar[str] = "provision-error"
    kind: ClassVar[ErrorKind] = "invalid"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IdempotencyKeyReused(ProvisionError):
    """The key was used before for a different operation or a different request body."""

    code = "idempotency-key-reused"


class IdempotencyKeyInUse(ProvisionError):
    """Another request with the same key is being processed or just won the race; retry to replay it."""

    code = "idempotency-key-in-use"
    kind = "conflict"


class InvalidIdempotencyKey(ProvisionError):
    code = "invalid-idempotency-key"
