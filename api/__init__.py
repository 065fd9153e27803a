"""Litestar HTTP service, CLI and settings."""
