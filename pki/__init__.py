"""X.509 authority core: CA hierarchy, profiles, issuance, revocation, CRL/OCSP, the Signer protocol.

Pure: no web, database, TPM or Vault imports. Time and randomness are passed in by callers.
"""
