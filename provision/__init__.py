"""Use cases joining the cores with storage, and the I/O adapters (SQL tables, Vault Transit)."""
