"""TPM structures, EK/AK checks, quote verification, event logs, appraisal (later issues)."""
