"""The transparency log's pure core: RFC 9162 Merkle math (merkle), C2SP signed notes (note),
checkpoints (checkpoint) and tiles (tiles), with typed errors (errors). No I/O, no storage."""
