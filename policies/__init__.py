"""Cedar schema, policies and evaluator (later issues)."""
