#!/usr/bin/env bash
# start-tpm.sh STATEDIR PORT
#
# Starts a swtpm TPM 2.0 on the provisioned state in STATEDIR as a daemon. The TPM command channel
# listens on 127.0.0.1:PORT, the control channel on 127.0.0.1:PORT+1 (the pair the tpm2-tools
# "swtpm" TCTI expects). The TPM is already started up (TPM2_Startup(CLEAR)), so it answers at once.
# The pid goes to STATEDIR/swtpm.pid, the log to STATEDIR/swtpm.log. Stop it with stop-tpm.sh.
#
# Exits non-zero if a swtpm from STATEDIR/swtpm.pid is still alive, or if the TPM does not come up.
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 STATEDIR PORT" >&2
    exit 2
fi
statedir=$1
port=$2
if ! [[ $port =~ ^[0-9]+$ ]] || ((port < 1 || port > 65534)); then
    echo "start-tpm: PORT must be 1..65534 (PORT+1 is the control channel), got '$port'" >&2
    exit 2
fi
ctrl=$((port + 1))

if [[ ! -s "$statedir/tpm2-00.permall" ]]; then
    echo "start-tpm: $statedir holds no provisioned TPM 2.0 state (run provision-tpm.sh first)" >&2
    exit 1
fi
pidfile="$statedir/swtpm.pid"
if [[ -s "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "start-tpm: a swtpm (pid $(cat "$pidfile")) already runs on $statedir" >&2
    exit 1
fi
rm -f "$pidfile"

if ! swtpm socket --tpm2 \
    --server "type=tcp,port=${port},bindaddr=127.0.0.1" \
    --ctrl "type=tcp,port=${ctrl},bindaddr=127.0.0.1" \
    --tpmstate "dir=${statedir}" \
    --flags not-need-init,startup-clear \
    --daemon \
    --pid "file=${pidfile}" \
    --log "file=${statedir}/swtpm.log"; then
    echo "start-tpm: swtpm failed to start on 127.0.0.1:${port}/${ctrl}; log:" >&2
    tail -n 5 "$statedir/swtpm.log" >&2 || true
    exit 1
fi

# With --daemon swtpm forks after opening its sockets; the pid file can lag the fork by a moment.
for _ in $(seq 100); do
    [[ -s "$pidfile" ]] && exit 0
    sleep 0.05
done
echo "start-tpm: swtpm did not write $pidfile; log:" >&2
tail -n 20 "$statedir/swtpm.log" >&2 || true
exit 1
