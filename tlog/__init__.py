"""Merkle math, checkpoints, proofs, tiles (later issues)."""
