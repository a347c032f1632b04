#!/usr/bin/env bash
# A one-node Slurm cluster on this host, for the tests that submit real sbatch jobs (docs/slurm.md).
#
# Installs Debian's slurm-wlm and munge when missing, writes a minimal slurm.conf (this host as its only
# node, root as SlurmUser, no cgroups), creates a munge key, starts munged, slurmctld and slurmd, and
# waits until `sinfo` shows the node idle. Safe to run again: it restarts the daemons it started before.
# Needs root. Spool and log files live under $SLURM_CI_DIR (default /tmp/haares-slurm).
set -euo pipefail

DIR="${SLURM_CI_DIR:-/tmp/haares-slurm}"
CONF_DIR=/etc/slurm
say() { echo "slurm-up: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
    say "needs root (slurmd runs as root here)"; exit 1
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
        || ! command -v sbatch >/dev/null; then
    say "installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >/dev/null
fi

# Stop daemons a previous run of this script started (by their pid files only).
for pidfile in "$DIR/slurmd.pid" "$DIR/slurmctld.pid"; do
    pid="$(cat "$pidfile" 2>/dev/null || true)"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
done

mkdir -p "$DIR/ctld" "$DIR/d" "$CONF_DIR" /run/munge /var/lib/munge /var/log/munge
NODE="$(hostname -s)"
# CPUs and memory as slurmd sees them, so the node is not drained for a configuration mismatch.
read -r CPUS MEM < <(slurmd -C | awk '
    /NodeName=/ { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
    END { print v["CPUs"], v["RealMemory"] }')

cat >"$CONF_DIR/slurm.conf" <<EOF
# Written by .ci/slurm-up.sh: a one-node test cluster. Not for production.
ClusterName=haares-ci
# Loopback addresses: the host name need not resolve (a fresh container may not list it).
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/d
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
# Short waits: a test allocation ends in minutes; finished jobs leave squeue quickly.
MinJobAge=30
KillWait=10
OverTimeLimit=0
InactiveLimit=0
Waittime=0
SchedulerParameters=sched_interval=2
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=60 State=UP OverSubscribe=YES
EOF
# cgroup off: no cgroup.conf is needed with proctrack/linuxproc and task/none.
rm -f "$CONF_DIR/cgroup.conf"

# Munge: a key when none exists, owned by the munge user, and the daemon.
if [ ! -s /etc/munge/munge.key ]; then
    if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key
    else dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none; fi
fi
chown munge:munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "starting munged"
    if command -v runuser >/dev/null; then runuser -u munge -- munged --force
    else su -s /bin/sh munge -c "munged --force"; fi
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi

say "starting slurmctld and slurmd on $NODE ($CPUS CPUs)"
slurmctld -i   # -i: tolerate damaged state files left by an earlier run
slurmd

for _ in $(seq 150); do
    state="$(sinfo -h -N -o '%T' 2>/dev/null | head -1 || true)"
    if [ "$state" = idle ]; then
        say "node $NODE idle"
        exit 0
    fi
    sleep 0.2
done
say "node never became idle (state: ${state:-none}); logs in $DIR"
tail -n 20 "$DIR/slurmctld.log" "$DIR/slurmd.log" >&2 || true
exit 1
