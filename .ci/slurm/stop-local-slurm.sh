#!/usr/bin/env bash
# stop-local-slurm.sh -- stop the cluster started by start-local-slurm.sh.
#
# Cancels the jobs still queued or running (so no slurmstepd is left), then
# kills only the pids recorded in $LOCAL_SLURM_DIR/run/*.pid, after checking
# each still runs the expected program; never by process name.
#
#   LOCAL_SLURM_DIR    same as for start-local-slurm.sh   [/tmp/mempamal-slurm]
#   LOCAL_SLURM_PURGE  1: also delete LOCAL_SLURM_DIR     [0]
set -uo pipefail

DIR=${LOCAL_SLURM_DIR:-/tmp/mempamal-slurm}
PURGE=${LOCAL_SLURM_PURGE:-0}
log() { printf '[stop-local-slurm %s] %s\n' "$(date +%T)" "$*" >&2; }

[ -d "$DIR" ] || { log "no $DIR; nothing to stop"; exit 0; }
DIR=$(cd "$DIR" && pwd -P)
CONF="$DIR/etc/slurm.conf"
export SLURM_CONF="$CONF"

pid_of() {  # pid_of PIDFILE COMM: print the pid if alive and running COMM
    local p
    [ -s "$1" ] || return 1
    p=$(cat "$1")
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$2" ] && echo "$p"
}
stop_pid() {  # stop_pid PID NAME: SIGTERM, up to 30 s, then SIGKILL
    log "stopping $2 (pid $1)"
    kill -TERM "$1" 2>/dev/null || return 0
    for _ in $(seq 1 300); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    log "$2 (pid $1) ignored SIGTERM; SIGKILL"
    kill -KILL "$1" 2>/dev/null || true
}

CTLD=$(pid_of "$DIR/run/slurmctld.pid" slurmctld || true)
if [ -n "$CTLD" ] && [ -f "$CONF" ]; then
    jobs=$(squeue -h -o '%A' 2>/dev/null | sort -u | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
        log "cancelling jobs: $jobs"
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null || true
        for _ in $(seq 1 100); do
            [ -z "$(squeue -h -o '%A' 2>/dev/null)" ] && break
            sleep 0.1
        done
    fi
fi
for f in "$DIR"/run/slurmd-*.pid; do
    [ -e "$f" ] || continue
    p=$(pid_of "$f" slurmd || true)
    [ -n "$p" ] && stop_pid "$p" slurmd
    rm -f "$f"
done
[ -n "$CTLD" ] && stop_pid "$CTLD" slurmctld
rm -f "$DIR/run/slurmctld.pid"
p=$(pid_of "$DIR/run/munged.pid" munged || true)   # only a munged we started
[ -n "$p" ] && stop_pid "$p" munged
rm -f "$DIR/run/munged.pid"
if [ -L /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$CONF" ]; then
    rm -f /etc/slurm/slurm.conf
fi
[ "$PURGE" = 1 ] && { log "removing $DIR"; rm -rf "$DIR"; }
log "stopped"
