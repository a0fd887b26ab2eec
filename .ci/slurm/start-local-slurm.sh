#!/usr/bin/env bash
# start-local-slurm.sh -- install (if needed), configure and start a real
# one-node SLURM cluster on this machine, for mempamal's SLURM tests.
#
# Debian/Ubuntu, run as root, no systemd needed. Idempotent: while the cluster
# is up, a rerun only checks the node is usable (or restarts the daemons if the
# generated slurm.conf changed). Stop it with stop-local-slurm.sh.
#
# No accounting daemon (slurmdbd + MariaDB) on purpose: mempamal's status reads
# squeue (which keeps finished jobs for MinJobAge seconds), its own per-task
# meta files and, when a cluster has it, sacct. Leaving the database out keeps
# start-up to a few seconds.
#
# Environment knobs (all optional):
#   LOCAL_SLURM_DIR        config/state/log directory     [/tmp/mempamal-slurm]
#                          (not under /root: munge must traverse it)
#   LOCAL_SLURM_CPUS       CPUs advertised for the node   [what `slurmd -C` reports]
#   LOCAL_SLURM_MEM_MB     RealMemory advertised (MB)     [what `slurmd -C` reports]
#   LOCAL_SLURM_PARTITION  partition name                 [debug]
#   LOCAL_SLURM_CTLD_PORT / LOCAL_SLURM_SLURMD_PORT       [6817 / 6818]
#   LOCAL_SLURM_TIMEOUT    seconds to wait for the node   [60]
#   LOCAL_SLURM_NO_INSTALL 1: never call apt-get          [0]
#
# After it returns 0, sbatch/squeue work through the /etc/slurm/slurm.conf
# symlink it creates (or `source $LOCAL_SLURM_DIR/env.sh` for SLURM_CONF).
set -euo pipefail

DIR=${LOCAL_SLURM_DIR:-/tmp/mempamal-slurm}
PARTITION=${LOCAL_SLURM_PARTITION:-debug}
CTLD_PORT=${LOCAL_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${LOCAL_SLURM_SLURMD_PORT:-6818}
TIMEOUT=${LOCAL_SLURM_TIMEOUT:-60}
NO_INSTALL=${LOCAL_SLURM_NO_INSTALL:-0}
MARKER="# managed-by: mempamal .ci/slurm/start-local-slurm.sh"

log() { printf '[start-local-slurm %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
alive() {  # alive PIDFILE COMM: the pid in PIDFILE runs COMM
    local p
    [ -s "$1" ] || return 1
    p=$(cat "$1")
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$2" ]
}
port_busy() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
wait_for() {  # wait_for SECONDS CMD...: poll CMD every 0.1 s
    local n=$(( $1 * 10 )); shift
    for _ in $(seq 1 "$n"); do "$@" && return 0; sleep 0.1; done
    return 1
}

[ "$(id -u)" = 0 ] || die "must run as root (slurmd setuids to the job's user)"

# -- 1. install: --no-install-recommends keeps it to ~8 small packages
missing=0
for b in slurmctld slurmd sbatch squeue munged mungekey; do
    command -v "$b" >/dev/null 2>&1 || missing=1
done
if [ "$missing" = 1 ]; then
    [ "$NO_INSTALL" = 1 ] && die "SLURM/munge binaries missing and LOCAL_SLURM_NO_INSTALL=1"
    log "installing slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        slurmctld slurmd slurm-client munge >/dev/null
fi

mkdir -p "$DIR"/{etc,state,spool,log,run}
chmod 755 "$DIR"
DIR=$(cd "$DIR" && pwd -P)
CONF="$DIR/etc/slurm.conf"
export SLURM_CONF="$CONF"

# -- 2. munge (reuse a munged that already answers)
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
if ! munge_ok; then
    MUNGE_USER=munge
    getent passwd munge >/dev/null || MUNGE_USER=root
    install -d -m 0700 -o "$MUNGE_USER" -g "$MUNGE_USER" /etc/munge /var/log/munge
    install -d -m 0711 -o "$MUNGE_USER" -g "$MUNGE_USER" /var/lib/munge
    install -d -m 0755 -o "$MUNGE_USER" -g "$MUNGE_USER" /run/munge
    [ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
    # munged refuses a key others can read or that its user does not own
    chown "$MUNGE_USER:$MUNGE_USER" /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    # a stale pid file/socket of a killed munged makes the new one exit
    rm -f /run/munge/munged.pid /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    log "starting munged as $MUNGE_USER"
    if [ "$MUNGE_USER" = root ]; then munged --force; else runuser -u munge -- munged; fi
    wait_for 5 munge_ok || die "munged did not come up; see /var/log/munge/munged.log"
    cp /run/munge/munged.pid "$DIR/run/munged.pid"   # the stop script kills only this pid
fi

# -- 3. slurm.conf
HOST=$(hostname -s 2>/dev/null || uname -n)
HOST=${HOST%%.*}
HW=$(slurmd -C 2>/dev/null | head -n1)   # NodeName=vm CPUs=2 ... RealMemory=24105
hw() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$HW"; }
CPUS=${LOCAL_SLURM_CPUS:-$(hw CPUs)}; CPUS=${CPUS:-$(nproc)}
MEM=${LOCAL_SLURM_MEM_MB:-$(hw RealMemory)}; MEM=${MEM:-1024}
DEFMEM=$(( MEM / CPUS )); [ "$DEFMEM" -ge 1 ] || DEFMEM=1

NEWCONF=$(cat <<EOF
$MARKER
ClusterName=mempamalci
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/slurmd-%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
# no cgroups in a container: track job processes through /proc
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
# accept the advertised CPUs/memory even if they differ from the hardware
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/linux
# no cgroups to enforce --mem: the gatherer polls each task every second and
# kills a job past its --mem ("Exceeded job memory limit" in its log; SLURM
# then says FAILED, not OUT_OF_MEMORY)
JobAcctGatherParams=OverMemoryKill
JobAcctGatherFrequency=task=1
AccountingStorageType=accounting_storage/none
# finished jobs stay visible to "squeue --states=all" for MinJobAge seconds,
# and each one is appended to the JobComp file
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.log
MinJobAge=3600
MaxArraySize=100001
# refuse at submit time what the node can never run (instead of pending forever)
EnforcePartLimits=ALL
# low latency for many short tasks
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=2,sched_min_interval=100000,bf_interval=1,default_queue_depth=1000
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without it a job without --mem takes the whole node and jobs run one by one
DefMemPerCPU=$DEFMEM
KillWait=5
ReturnToService=2
SlurmdTimeout=300
InactiveLimit=0
Waittime=0
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
)
CONF_CHANGED=0
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$NEWCONF" ]; then
    printf '%s\n' "$NEWCONF" > "$CONF"
    CONF_CHANGED=1
fi
printf 'export SLURM_CONF=%q\n' "$CONF" > "$DIR/env.sh"

# -- 4. slurmctld + slurmd
CTLD_PID="$DIR/run/slurmctld.pid"
SLURMD_PID="$DIR/run/slurmd-$HOST.pid"
if [ "$CONF_CHANGED" = 1 ]; then
    # node definitions cannot change through `scontrol reconfigure`: restart
    for d in "slurmd:$SLURMD_PID" "slurmctld:$CTLD_PID"; do
        if alive "${d#*:}" "${d%%:*}"; then
            p=$(cat "${d#*:}")
            log "slurm.conf changed; restarting ${d%%:*} (pid $p)"
            kill -TERM "$p"
            for _ in $(seq 1 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        fi
    done
fi
if ! alive "$CTLD_PID" slurmctld; then
    port_busy "$CTLD_PORT" && die "port $CTLD_PORT in use (another slurmctld?); set LOCAL_SLURM_CTLD_PORT"
    rm -f "$CTLD_PID"
    log "starting slurmctld"
    slurmctld -f "$CONF"
fi
if ! alive "$SLURMD_PID" slurmd; then
    port_busy "$SLURMD_PORT" && die "port $SLURMD_PORT in use (another slurmd?); set LOCAL_SLURM_SLURMD_PORT"
    rm -f "$SLURMD_PID"
    log "starting slurmd"
    slurmd -f "$CONF"
fi

# -- 5. wait until the node takes jobs
deadline=$(( $(date +%s) + TIMEOUT ))
while :; do
    # the daemons fork before binding their ports: a zero exit status proves nothing
    for d in "slurmctld:$CTLD_PID" "slurmd:$SLURMD_PID"; do
        if [ -s "${d#*:}" ] && ! alive "${d#*:}" "${d%%:*}"; then
            log "${d%%:*} died; last log lines:"
            tail -n 15 "$DIR/log/${d%%:*}"*.log >&2 || true
            exit 1
        fi
    done
    state=$(sinfo -h -n "$HOST" -o '%T' 2>/dev/null || true)
    case "$state" in
        idle|mixed|allocated|completing) break ;;
        down*|drain*|fail*) scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    if [ "$(date +%s)" -ge "$deadline" ]; then
        log "node state '$state' after ${TIMEOUT}s; last log lines:"
        tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd-$HOST.log" >&2 || true
        exit 1
    fi
    sleep 0.1
done
# the controller that answered must be ours, not one of another directory
ssl=$(scontrol show config 2>/dev/null | sed -n 's/^StateSaveLocation *= *//p')
[ "$ssl" = "$DIR/state" ] || die "the slurmctld on port $CTLD_PORT uses $ssl, not $DIR/state"

# let plain sbatch/squeue find this cluster (only replace a link or a file we made)
mkdir -p /etc/slurm
if [ -L /etc/slurm/slurm.conf ] || [ ! -e /etc/slurm/slurm.conf ] \
        || grep -qF "$MARKER" /etc/slurm/slurm.conf; then
    ln -sfn "$CONF" /etc/slurm/slurm.conf
else
    log "WARNING: /etc/slurm/slurm.conf is not ours; leaving it; use SLURM_CONF=$CONF"
fi
log "cluster ready: node $HOST $state, CPUs=$CPUS RealMemory=$MEM, partition $PARTITION"
log "pids: slurmctld $(cat "$CTLD_PID"), slurmd $(cat "$SLURMD_PID")"
