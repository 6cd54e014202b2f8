#!/usr/bin/env bash
# A one-node Slurm cluster with accounting, for the `slurm` tests (tests/workflow/test_slurm.py).
#
#   scripts/slurm-cluster.sh up     install (Debian packages) and start munge, MariaDB, slurmdbd,
#                                   slurmctld and slurmd; wait until the node is idle
#   scripts/slurm-cluster.sh down   stop every daemon and remove all state (database included)
#
# Run as root on Debian bookworm (slurm-wlm 22.05) without systemd: daemons are started by hand.
# Both commands are idempotent. The cluster `testtime` has partitions `cpu` (default) and `gpu`
# on one node `node1`, account `testtime` (root is its user, associations are enforced, so an
# unknown account or partition is refused at submission), and 8 GPUs of type h100 declared as
# GRES on placeholder files: GPU requests are accepted and scheduled on a machine without GPUs
# (jobs see CUDA_VISIBLE_DEVICES, no device). The node claims 96 CPUs and ~780 GB
# (SlurmdParameters=config_overrides) so that the workflow profile's requests fit; nothing
# enforces them (proctrack/linuxproc, task/none). Services listen on this machine only: MariaDB
# without networking, slurmctld/slurmd/slurmdbd addressed as 127.0.0.1.
set -euo pipefail

ROOT=/run/testtime-slurm # pid files, fake GPU files
MARIADB_PID=/run/mysqld/testtime-mariadb.pid # written by the mysql user
MUNGE_PID=/run/munge/testtime-munged.pid     # written by the munge user
STATE=/var/lib/testtime-slurm
LOG=/var/log/testtime-slurm
CONF=/etc/slurm
CLUSTER=testtime
ACCOUNT=testtime
NODE=node1
GPUS=8
PACKAGES=(munge mariadb-server slurmdbd slurmctld slurmd slurm-client)

log() { echo "slurm-cluster: $*" >&2; }

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq $((seconds * 5))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  log "timed out waiting for $what; logs in $LOG"
  tail -n 20 "$LOG"/*.log >&2 || true
  return 1
}

install_packages() {
  local missing=()
  for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

write_config() {
  local host
  host=$(hostname -s)
  mkdir -p "$CONF" "$ROOT" "$STATE"/{ctld,slurmd,mysql} "$LOG"
  for i in $(seq 0 $((GPUS - 1))); do : >"$ROOT/gpu$i"; done
  cat >"$CONF/slurm.conf" <<EOF
# Written by scripts/slurm-cluster.sh (test cluster; removed by 'down').
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$ROOT/slurmctld.pid
SlurmdPidFile=$ROOT/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MinJobAge=300
KillWait=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStorageEnforce=associations
AccountingStorageTRES=gres/gpu
# sacct shows the plugin's --comment (rule_<name>_wildcards_...) only with job_comment
AccountingStoreFlags=job_comment
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$host CPUs=96 Boards=1 SocketsPerBoard=1 CoresPerSocket=96 ThreadsPerCore=1 RealMemory=800000 Gres=gpu:h100:$GPUS State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE MaxTime=INFINITE State=UP
EOF
  cat >"$CONF/gres.conf" <<EOF
NodeName=$NODE Name=gpu Type=h100 File=$ROOT/gpu[0-$((GPUS - 1))]
EOF
  cat >"$CONF/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=$host
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$ROOT/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=testtime
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$CONF/slurmdbd.conf"
}

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_munge() {
  running "$MUNGE_PID" && return 0
  [ -s /etc/munge/munge.key ] || mungekey --create --force
  mkdir -p /run/munge && chown munge:munge /run/munge
  runuser -u munge -- /usr/sbin/munged --pid-file="$MUNGE_PID" 2>>"$LOG/munged.log"
  wait_for 10 munge sh -c 'munge -n | unmunge'
}

start_mariadb() {
  if ! running "$MARIADB_PID"; then
    chown mysql:mysql "$STATE/mysql"
    if [ ! -d "$STATE/mysql/mysql" ]; then
      mariadb-install-db --user=mysql --datadir="$STATE/mysql" --skip-test-db >/dev/null
    fi
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    touch "$LOG/mariadb.log" && chown mysql:mysql "$LOG/mariadb.log"
    nohup mariadbd --user=mysql --datadir="$STATE/mysql" --skip-networking \
      --socket=/run/mysqld/mysqld.sock --innodb-lock-wait-timeout=900 --pid-file="$MARIADB_PID" \
      --log-error="$LOG/mariadb.log" >/dev/null 2>&1 &
    wait_for 30 MariaDB mariadb -e 'SELECT 1'
  fi
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'testtime';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
}

start_slurm() {
  if ! running "$ROOT/slurmdbd.pid"; then
    slurmdbd
    wait_for 30 slurmdbd sacctmgr -n list cluster
  fi
  sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null || true
  sacctmgr -i -Q add account "$ACCOUNT" cluster="$CLUSTER" description=tests organization=tests \
    >/dev/null || true
  sacctmgr -i -Q add user root account="$ACCOUNT" cluster="$CLUSTER" >/dev/null || true
  running "$ROOT/slurmctld.pid" || slurmctld
  wait_for 30 slurmctld scontrol ping
  running "$ROOT/slurmd.pid" || slurmd -N "$NODE"
  wait_for 60 "node $NODE idle" sh -c "sinfo -h -n $NODE -o %t | grep -qx idle"
  log "up: cluster $CLUSTER, account $ACCOUNT, partitions cpu gpu, node $NODE (96 CPUs, $GPUS GPUs)"
}

stop() { # stop PIDFILE NAME
  local pid
  [ -f "$1" ] || return 0
  pid=$(cat "$1")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$1"
  log "stopped $2"
}

up() {
  [ "$(id -u)" -eq 0 ] || { log "must run as root"; exit 1; }
  install_packages
  write_config
  start_munge
  start_mariadb
  start_slurm
}

down() {
  if [ -f "$ROOT/slurmctld.pid" ] && running "$ROOT/slurmctld.pid"; then
    scancel --user=root >/dev/null 2>&1 || true
  fi
  stop "$ROOT/slurmd.pid" slurmd
  stop "$ROOT/slurmctld.pid" slurmctld
  stop "$ROOT/slurmdbd.pid" slurmdbd
  stop "$MARIADB_PID" MariaDB
  stop "$MUNGE_PID" munged
  rm -rf "$ROOT" "$STATE" "$LOG" "$CONF/slurm.conf" "$CONF/gres.conf" "$CONF/slurmdbd.conf"
  log "down: state removed"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
