#!/usr/bin/env bash
# stop-tpm.sh STATEDIR
#
# Stops the swtpm started by start-tpm.sh on STATEDIR: SIGTERM to the pid in STATEDIR/swtpm.pid,
# wait up to 5 s for it to exit (swtpm writes its state on the way out), SIGKILL as a last resort.
# Succeeds when no such process runs (already stopped, or never started).
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 STATEDIR" >&2
    exit 2
fi
pidfile="$1/swtpm.pid"
[[ -s "$pidfile" ]] || exit 0
pid=$(cat "$pidfile")
if ! [[ $pid =~ ^[0-9]+$ ]]; then
    echo "stop-tpm: $pidfile does not hold a pid" >&2
    exit 1
fi

# Only signal the pid if it really is a swtpm: a stale pid file may name a recycled pid. A zombie
# (state Z) has exited already; it merely waits for init to reap it (swtpm --daemon reparents to
# pid 1), so it counts as stopped.
is_swtpm() {
    local stat
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == swtpm ]] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

if is_swtpm; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        is_swtpm || break
        sleep 0.05
    done
    if is_swtpm; then
        echo "stop-tpm: swtpm $pid ignored SIGTERM for 5s; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.1
    fi
fi
rm -f "$pidfile"
