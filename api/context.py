"""Per-request context visible to logs, problems and audit (contextvars follow sync_to_thread)."""

from contextvars import ContextVar

request_id_var: ContextVar[str] = ContextVar("request_id", default="")
