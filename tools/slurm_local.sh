#!/usr/bin/env bash
# A one-node Slurm cluster on localhost, for trying and testing the Slurm scripts.
#
# Usage: tools/slurm_local.sh install|start|stop|status|env
#   install  apt-get install Debian's Slurm (slurmctld, slurmd, slurm-client) and munge
#            when a piece is missing (needs root and apt-get); nothing to do: returns at once
#   start    start munged, slurmctld and slurmd (2 CPUs, partition "$PSBN_SLURM_PARTITION"),
#            wait until the node is idle; a running cluster is left as it is
#   stop     cancel this cluster's jobs, stop its daemons and wait until they are gone
#   status   print the daemons and the node; exit 0 when all three run, 1 otherwise
#   env      print the line that points Slurm's commands at this cluster:
#              eval "$(tools/slurm_local.sh env)"
#
# Environment:
#   PSBN_SLURM_DIR        state: config, munge key and socket, spool, logs, pid files
#                         [/tmp/psbn-slurm]
#   PSBN_SLURM_PORT       slurmctld's port; slurmd uses the next one [6817]
#   PSBN_SLURM_PARTITION  the partition's name [cpu]
#   PSBN_SLURM_CPUS       CPUs the node offers [2]
#
# Made for containers: no systemd, no cgroups (proctrack/linuxproc, task/none),
# every configured address on the loopback (127.0.0.1), every daemon runs as root
# and reads only files under PSBN_SLURM_DIR (the system's /etc/slurm and munge key
# are not used).  Slurm's commands find the cluster through SLURM_CONF.
set -euo pipefail

STATE=${PSBN_SLURM_DIR:-/tmp/psbn-slurm}
PORT=${PSBN_SLURM_PORT:-6817}
PARTITION=${PSBN_SLURM_PARTITION:-cpu}
CPUS=${PSBN_SLURM_CPUS:-2}
NODE=localhost
PACKAGES=(slurmctld slurmd slurm-client munge)
COMMANDS=(munged mungekey slurmctld slurmd srun scontrol sinfo squeue scancel)

usage() {
    echo "slurm_local: error: usage: $0 install|start|stop|status|env" \
        "(see the script's first lines)" >&2
    exit 2
}

missing_commands() {
    local name missing=()
    for name in "${COMMANDS[@]}"; do
        command -v "$name" >/dev/null 2>&1 || missing+=("$name")
    done
    echo "${missing[*]}"
}

do_install() {
    local missing
    missing=$(missing_commands)
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "slurm_local: cannot install Slurm: not root (missing: $missing)" >&2
        return 3
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "slurm_local: cannot install Slurm: no apt-get (missing: $missing)" >&2
        return 3
    fi
    echo "slurm_local: installing ${PACKAGES[*]} (missing: $missing)" >&2
    export DEBIAN_FRONTEND=noninteractive
    # Debian's maintainer scripts try to start the services; refuse that
    # (policy-rc.d exit 101), the cluster is started by this script.
    local policy=/usr/sbin/policy-rc.d added_policy=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy"
        added_policy=1
    fi
    local rc=0
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
        "${PACKAGES[@]}" >/dev/null; } || rc=$?
    [ -n "$added_policy" ] && rm -f "$policy"
    if [ "$rc" != 0 ]; then
        echo "slurm_local: apt-get install ${PACKAGES[*]} failed (exit $rc)" >&2
        return 3
    fi
    missing=$(missing_commands)
    if [ -n "$missing" ]; then
        echo "slurm_local: still missing after apt-get: $missing" >&2
        return 3
    fi
}

pid_of() {  # pid_of NAME: the pid in NAME.pid when that process runs
    local file="$STATE/$1.pid" pid
    [ -s "$file" ] || return 1
    pid=$(cat "$file")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    # a recycled pid belongs to another program
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] || return 1
    echo "$pid"
}

our_processes() {  # pids of slurmstepd/slurmd/slurmctld/munged started for $STATE
    local dir pid comm
    for dir in /proc/[0-9]*; do
        pid=${dir#/proc/}
        comm=$(cat "$dir/comm" 2>/dev/null) || continue
        case $comm in
            slurmstepd|slurmd|slurmctld)
                tr '\0' '\n' <"$dir/environ" 2>/dev/null \
                    | grep -qxF "SLURM_CONF=$STATE/slurm.conf" && echo "$pid" ;;
            munged)
                tr '\0' '\n' <"$dir/cmdline" 2>/dev/null \
                    | grep -qxF -- "--socket=$STATE/munge/munge.socket" \
                    && echo "$pid" ;;
        esac
    done
    return 0
}

wait_gone() {  # wait_gone SECONDS PID...: true when all have exited
    local deadline=$((SECONDS + $1)) pid alive
    shift
    while :; do
        alive=
        for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ -z "$alive" ] && return 0
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.2
    done
}

own_dir() {  # a directory of ours: created searchable by all (munged wants
    # its socket's directories so); one that exists keeps its mode (it may be
    # /tmp, whose sticky bit must stay)
    [ -d "$1" ] || { mkdir -p "$1" && chmod 755 "$1"; }
}

write_config() {
    local dir
    for dir in "$STATE" "$STATE"/{munge,ctld,spool,log}; do own_dir "$dir"; done
    [ -s "$STATE/munge/munge.key" ] ||
        mungekey --create --keyfile="$STATE/munge/munge.key" >/dev/null
    chmod 600 "$STATE/munge/munge.key"
    cat >"$STATE/slurm.conf" <<EOF
# written by tools/slurm_local.sh: a one-node cluster on the loopback
ClusterName=psbn
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE/munge/munge.socket
CommunicationParameters=NoInAddrAny
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# containers: no cgroups
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
InactiveLimit=0
MinJobAge=30
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$CPUS State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

daemons_up() {
    pid_of munged >/dev/null && pid_of slurmctld >/dev/null &&
        pid_of slurmd >/dev/null
}

node_state() {
    sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n1
}

do_start() {
    local missing
    missing=$(missing_commands)
    if [ -n "$missing" ]; then
        echo "slurm_local: Slurm is not installed (missing: $missing);" \
            "run: tools/slurm_local.sh install" >&2
        return 3
    fi
    export SLURM_CONF="$STATE/slurm.conf"
    if daemons_up && [ "$(node_state)" = idle ]; then
        echo "slurm_local: already running ($STATE)" >&2
        return 0
    fi
    do_stop quiet  # leftovers of a half-started or crashed cluster
    write_config
    munged --socket="$STATE/munge/munge.socket" \
        --key-file="$STATE/munge/munge.key" \
        --pid-file="$STATE/munged.pid" \
        --log-file="$STATE/log/munged.log" \
        --seed-file="$STATE/munge/munged.seed"
    slurmctld -f "$SLURM_CONF"
    slurmd -f "$SLURM_CONF" -N "$NODE"
    local deadline=$((SECONDS + 60)) state=
    while [ "$SECONDS" -lt "$deadline" ]; do
        state=$(node_state)
        case $state in
            idle) echo "slurm_local: running ($STATE, partition $PARTITION," \
                    "$CPUS CPUs, port $PORT)" >&2
                  return 0 ;;
            down*|drain*|fail*|inval*)
                scontrol update nodename="$NODE" state=resume 2>/dev/null || : ;;
        esac
        sleep 0.5
    done
    echo "slurm_local: the node did not become idle (state: ${state:-none});" \
        "logs in $STATE/log" >&2
    tail -n 5 "$STATE"/log/*.log >&2 || :
    return 1
}

do_stop() {
    export SLURM_CONF="$STATE/slurm.conf"
    local quiet=${1:-} jobs pids
    if pid_of slurmctld >/dev/null; then
        jobs=$(squeue -h -o %i 2>/dev/null || :)
        if [ -n "$jobs" ]; then
            # shellcheck disable=SC2086  # one job id per word
            scancel $jobs 2>/dev/null || :
            local deadline=$((SECONDS + 20))
            while [ -n "$(squeue -h -o %i 2>/dev/null)" ] &&
                [ "$SECONDS" -lt "$deadline" ]; do sleep 0.5; done
        fi
    fi
    # all three at once: each takes about 2 s to exit
    local name pid daemons=()
    for name in slurmd slurmctld munged; do
        pid=$(pid_of "$name") && daemons+=("$pid")
    done
    if [ "${#daemons[@]}" -gt 0 ]; then
        kill -TERM "${daemons[@]}" 2>/dev/null || :
        wait_gone 15 "${daemons[@]}" || kill -KILL "${daemons[@]}" 2>/dev/null || :
    fi
    # step daemons (and any daemon whose pid file was lost) of this cluster
    pids=$(our_processes)
    if [ -n "$pids" ]; then
        # shellcheck disable=SC2086
        kill -TERM $pids 2>/dev/null || :
        # shellcheck disable=SC2086
        wait_gone 10 $pids || kill -KILL $pids 2>/dev/null || :
    fi
    rm -f "$STATE"/{munged,slurmctld,slurmd}.pid
    [ -n "$quiet" ] || echo "slurm_local: stopped ($STATE)" >&2
}

do_status() {
    export SLURM_CONF="$STATE/slurm.conf"
    local name pid rc=0
    for name in munged slurmctld slurmd; do
        if pid=$(pid_of "$name"); then
            echo "$name: running (pid $pid)"
        else
            echo "$name: not running"; rc=1
        fi
    done
    if [ "$rc" = 0 ]; then
        sinfo -N -o '%N %P %T %c' || rc=1
    fi
    echo "state: $STATE"
    return "$rc"
}

case ${1:-} in
    install) do_install ;;
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    env) printf 'export SLURM_CONF=%q\n' "$STATE/slurm.conf" ;;
    *) usage ;;
esac
