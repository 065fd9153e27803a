"""Read the audit trail straight from the service's database, as an auditor would."""

from __future__ import annotations

from sqlalchemy import create_engine, text


def audit_rows(database_url: str, action: str | None = None) -> list[dict[str, object]]:
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            query = "SELECT actor, action, target, outcome, code, detail FROM audit_events"
            params: dict[str, str] = {}
            if action:
                query += " WHERE action = :action"
                params["action"] = action
            return [dict(row._mapping) for row in conn.execute(text(query + " ORDER BY id"), params)]
    finally:
        engine.dispose()


def count_rows(database_url: str, table: str) -> int:
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


def key_refs(database_url: str) -> list[str]:
    """The key backend of each CA (the part of its key ref before the colon)."""
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT key_ref FROM certificate_authorities ORDER BY created_at"))
            return [str(ref).split(":", 1)[0] for (ref,) in rows]
    finally:
        engine.dispose()
