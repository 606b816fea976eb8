#!/usr/bin/env bash
# A single-node SLURM on this machine, for tests/test_slurm.py (as root: Debian's slurm-wlm and munge, then munged,
# slurmctld and slurmd). Idempotent: a cluster that already answers is left as it is.
#   sudo bash tests/slurm/start_slurm.sh
set -euo pipefail
CONF=/etc/slurm/slurm.conf

answers() {  # a node that takes jobs
  [ -n "$(sinfo --noheader --responding --states=idle,mixed,allocated 2>/dev/null)" ] && {
    echo "SLURM is running: $(sinfo --noheader --format='%P %D node(s) %c CPUs %T' | head -1)"; }
}
command -v sinfo >/dev/null && answers && exit 0
[ "$(id -u)" -eq 0 ] || { echo "start_slurm.sh: run as root (it installs packages and starts daemons)" >&2; exit 1; }

command -v slurmctld >/dev/null && command -v munged >/dev/null || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null; }

# munge: the key the package made (or a new one), then the daemon.
[ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
                                 chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
pgrep -x munged >/dev/null || runuser -u munge -- munged

# slurm.conf: one node with this machine's cores and memory (as slurmd measures them), one partition.
NODE=$(slurmd -C | head -1)  # NodeName=... CPUs=... RealMemory=...
HOST=$(hostname -s)
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
cat > "$CONF" <<CONF
ClusterName=local
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1
ReturnToService=2
MinJobAge=600
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
$NODE State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do  # the node registers within seconds
  answers && exit 0
  sleep 1
done
echo "start_slurm.sh: the node did not come up; see /var/log/slurm/slurmctld.log and slurmd.log" >&2
exit 1
