#!/usr/bin/env bash
# provision-tpm.sh STATEDIR CADIR [rsa|ecc]
#
# "Manufactures" a swtpm TPM 2.0 into STATEDIR: swtpm_setup creates the endorsement key(s), has
# swtpm_localca sign the EK certificate(s) with the intermediate CA in CADIR (made by
# make-manufacturer-ca.sh), writes them into the TCG EK-certificate NV indices, adds a platform
# certificate, and locks the NV indices it wrote.
#
# swtpm_setup 0.7 always manufactures a TPM 2.0 with two EKs, like most real TPMs ship:
#   RSA-2048 EK          cert at NV 0x01c00002, EK persisted at 0x81010001 (`tpm2_createek -G rsa`)
#   ECC NIST P-384 EK    cert at NV 0x01c00016, EK persisted at 0x81010016 (`tpm2_createek -G ecc384`,
#                        the TCG EK profile's high-range template H-3; not the P-256 one at 0x01c0000a)
# The platform certificate (NV 0x01c08000) is bound to the RSA EK. The third argument (default ecc)
# says which EK the test harness treats as "the" EK; it is recorded in STATEDIR/kind, and for ecc
# --ecc is passed to swtpm_setup (which for TPM 2.0 and swtpm 0.7 changes nothing, but states intent).
#
# The DER EK certificates are also written to STATEDIR/ek-certs/ek-<type>.crt. The swtpm_setup and
# swtpm_localca configuration lives in CADIR/localca/ (its lock and the EK serial counter too), so
# nothing under /etc or /var/lib/swtpm-localca is read or written.
#
# Idempotent: if STATEDIR/.provisioned exists nothing happens. The state is built in a scratch dir
# and moved into STATEDIR only when complete, so an interrupted run leaves no half-made TPM.
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
    echo "usage: $0 STATEDIR CADIR [rsa|ecc]" >&2
    exit 2
fi
statedir=$1
cadir=$(cd "$2" && pwd)
kind=${3:-ecc}
case $kind in
rsa) kind_args=() ;;
ecc) kind_args=(--ecc) ;;
*)
    echo "provision-tpm: kind must be rsa or ecc, got '$kind'" >&2
    exit 2
    ;;
esac

if [[ -e "$statedir/.provisioned" ]]; then
    exit 0
fi
for f in intermediate.key intermediate.pem; do
    if [[ ! -s "$cadir/$f" ]]; then
        echo "provision-tpm: $cadir/$f missing (run make-manufacturer-ca.sh $cadir first)" >&2
        exit 1
    fi
done

localca_tool=$(command -v swtpm_localca || true)
if [[ -z $localca_tool ]]; then
    echo "provision-tpm: swtpm_localca not found (apt-get install swtpm-tools)" >&2
    exit 1
fi

# swtpm-localca.conf(5): statedir holds the lock and is where swtpm_localca would create a CA of
# its own if signingkey were missing (it is not: we hand it the manufacturer's intermediate).
# certserial is the next EK-certificate serial; sharing it per CA keeps serials unique per issuer.
localca="$cadir/localca"
mkdir -p "$localca"
write_if_changed() { # FILE CONTENT: atomic replace, so concurrent provisions never see half a file
    local file=$1 content=$2 tmp
    if [[ -f $file && "$(cat "$file")" == "$content" ]]; then
        return 0
    fi
    tmp=$(mktemp "$file.XXXXXX")
    printf '%s\n' "$content" >"$tmp"
    chmod 644 "$tmp"
    mv -f "$tmp" "$file"
}
write_if_changed "$localca/swtpm-localca.conf" "statedir = $localca
signingkey = $cadir/intermediate.key
issuercert = $cadir/intermediate.pem
certserial = $localca/certserial"
write_if_changed "$localca/swtpm-localca.options" "--platform-manufacturer $(basename "$cadir")
--platform-version 1.0
--platform-model weighstation-swtpm"
write_if_changed "$localca/swtpm_setup.conf" "create_certs_tool = $localca_tool
create_certs_tool_config = $localca/swtpm-localca.conf
create_certs_tool_options = $localca/swtpm-localca.options
active_pcr_banks = sha256"

mkdir -p "$statedir"
statedir=$(cd "$statedir" && pwd)
work=$(mktemp -d "$statedir/.provision.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/state" "$work/state/ek-certs"

if ! swtpm_setup --tpm2 \
    --tpmstate "$work/state" \
    --config "$localca/swtpm_setup.conf" \
    --create-ek-cert --create-platform-cert --lock-nvram \
    "${kind_args[@]}" \
    --pcr-banks sha256 \
    --write-ek-cert-files "$work/state/ek-certs" \
    --logfile "$work/setup.log" >"$work/setup.out" 2>&1; then
    echo "provision-tpm: swtpm_setup failed:" >&2
    cat "$work/setup.log" "$work/setup.out" >&2
    exit 1
fi
# swtpm_setup leaves its lock file behind; swtpm takes its own when it starts.
rm -f "$work/state/.lock"
cp "$work/setup.log" "$work/state/setup.log"
echo "$kind" >"$work/state/kind"

shopt -s dotglob
rm -rf "$statedir/ek-certs" # leftovers of an earlier, unfinished run
mv -f "$work/state"/* "$statedir/"
touch "$statedir/.provisioned"
