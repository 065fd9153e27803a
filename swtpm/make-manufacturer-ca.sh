#!/usr/bin/env bash
# make-manufacturer-ca.sh OUTDIR [NAME]
#
# Creates a TPM-manufacturer CA the way vendors ship one: a self-signed root CA and an
# intermediate ("EK issuing") CA with pathlen:0 signed by the root. Both keys are ECDSA P-256.
#
# OUTDIR afterwards holds:
#   root.key root.pem                 the manufacturer root (the trust anchor a verifier pins)
#   intermediate.key intermediate.pem the EK-issuing CA (swtpm_localca signs EK certs with it)
#   chain.pem                         intermediate + root, in that order
#
# Idempotent: when all of those files exist it does nothing. NAME (default "acme-tpm") goes into
# the subject names, e.g. "acme-tpm" for the trusted manufacturer and "rogue-tpm" for negative tests.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: $0 OUTDIR [NAME]" >&2
    exit 2
fi
outdir=$1
name=${2:-acme-tpm}

files=(root.key root.pem intermediate.key intermediate.pem chain.pem)
complete=1
for f in "${files[@]}"; do
    [[ -s "$outdir/$f" ]] || complete=0
done
if [[ $complete -eq 1 ]]; then
    exit 0
fi

mkdir -p "$outdir"
# Build in a scratch dir next to OUTDIR and move the results in at the end, so an interrupted run
# never leaves a half-made CA that a later run would take for complete.
work=$(mktemp -d "$outdir/.make-ca.XXXXXX")
trap 'rm -rf "$work"' EXIT
umask 077

cat >"$work/ext.cnf" <<'EOF'
[req]
distinguished_name = req_dn
[req_dn]

[root_ext]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[intermediate_ext]
basicConstraints = critical, CA:true, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/root.key" 2>/dev/null
openssl req -new -x509 -sha256 -days 7300 -key "$work/root.key" \
    -subj "/C=US/O=${name}/CN=${name} EK Root CA" \
    -config "$work/ext.cnf" -extensions root_ext \
    -set_serial "0x$(openssl rand -hex 16)" \
    -out "$work/root.pem"

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/intermediate.key" 2>/dev/null
openssl req -new -sha256 -key "$work/intermediate.key" \
    -subj "/C=US/O=${name}/CN=${name} EK Issuing CA 1" \
    -config "$work/ext.cnf" -out "$work/intermediate.csr"
openssl x509 -req -sha256 -days 3650 -in "$work/intermediate.csr" \
    -CA "$work/root.pem" -CAkey "$work/root.key" \
    -set_serial "0x$(openssl rand -hex 16)" \
    -extfile "$work/ext.cnf" -extensions intermediate_ext \
    -out "$work/intermediate.pem" 2>/dev/null

cat "$work/intermediate.pem" "$work/root.pem" >"$work/chain.pem"
chmod 644 "$work/root.pem" "$work/intermediate.pem" "$work/chain.pem"
# Keys stay 0600: swtpm_localca runs as the user who calls provision-tpm.sh, the CA's owner.
for f in "${files[@]}"; do
    mv -f "$work/$f" "$outdir/$f"
done
