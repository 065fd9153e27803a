"""Alembic environment: always run with a connection handed in by provision.migrate."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from provision import tables

assert tables  # the import registers the tables on SQLModel.metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection, target_metadata=SQLModel.metadata, render_as_batch=True, compare_type=True
)
with context.begin_transaction():
    context.run_migrations()
