"""Truck-side TPM agent (later issues)."""
