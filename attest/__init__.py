"""TPM structures, EK/AK checks, the credential challenge; quote verification, event logs and
appraisal follow in later issues.

Pure: no I/O, no clock, no randomness of its own (both are passed in), and no web, database,
Vault or TPM-stack imports. Enrollment core:

- `attest.public`: `parse_tpmt_public`, `parse_tpm2b_public` → `TpmtPublic` (`name()`, `public_key()`)
- `attest.ak`: `check_attestation_key` → `VerifiedAk` (scheme and hash pinned for later quotes)
- `attest.ek`: `verify_ek_certificate` → `VerifiedEk`, `check_ek_matches`
- `attest.credential`: `make_credential` → `MadeCredential`, `secrets_match`
- `attest.attestation`: `parse_tpms_attest` (CERTIFY and QUOTE bodies), `parse_tpmt_signature`,
  `verify_attest_signature` (scheme and hash pinned to the enrolled AK)
- `attest.certify`: `verify_certify` → `VerifiedCertify`, `check_identity_key`
- `attest.errors`: `AttestError` and one subclass per failure kind (stable `code`, `kind`)
"""
