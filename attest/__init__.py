"""TPM structures, EK/AK checks, the credential challenge, quote verification, event logs, golden
releases and appraisal.

Pure: no I/O, no clock, no randomness of its own (both are passed in), and no web, database,
Vault or TPM-stack imports.

Enrollment:

- `attest.public`: `parse_tpmt_public`, `parse_tpm2b_public` → `TpmtPublic` (`name()`, `public_key()`)
- `attest.ak`: `check_attestation_key` → `VerifiedAk` (scheme and hash pinned for later quotes)
- `attest.ek`: `verify_ek_certificate` → `VerifiedEk`, `check_ek_matches`
- `attest.credential`: `make_credential` → `MadeCredential`, `secrets_match`
- `attest.attestation`: `parse_tpms_attest` (CERTIFY and QUOTE bodies), `parse_tpmt_signature`,
  `verify_attest_signature` (scheme and hash pinned to the enrolled AK)
- `attest.certify`: `verify_certify` → `VerifiedCertify`, `check_identity_key`

Attestation:

- `attest.binding`: the extraData a nonce asks for (the nonce, or its binding to one tender)
- `attest.quote`: `verify_quote` → `VerifiedQuote` (`PcrRequest`, `QuoteClock`, `BootTransition`)
- `attest.eventlog`: `parse_event_log` → `EventLog` (TCG PC Client crypto-agile), and its encoder
- `attest.replay`: `replay`, `appraise_event_log` → `AppraisedLog`
- `attest.release`: `verify_release_manifest` → `ReleaseManifest`, `sign_release_manifest`
- `attest.appraise`: `appraise` → `Appraisal` (EAR status, AR4SI trust vector, matching release)

- `attest.errors`: `AttestError` and one subclass per failure kind (stable `code`, `kind`)
"""
