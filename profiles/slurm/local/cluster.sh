#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, to try `--profile profiles/slurm` without a cluster
# (the tests start and stop it). Needs root and Debian's packages: apt-get install -y slurm-wlm munge
#
#   profiles/slurm/local/cluster.sh start [DIR]   # config, state and logs in DIR (default /tmp/triage-slurm)
#   profiles/slurm/local/cluster.sh stop [DIR]    # stops every daemon it started, removes what it put in /etc
#
# One node (this machine, 127.0.0.1) in one partition named "cpu", as profiles/slurm/config.yaml asks for.
# No accounting database: status comes from squeue (pass --slurm-status-command squeue to Snakemake).
# The config is also put at /etc/slurm/slurm.conf, Slurm's default place (refused if another is there):
# snakemake-executor-plugin-slurm-jobstep 0.6.1 drops SLURM_CONF from the job's environment before its
# srun, so a config elsewhere is not found inside the jobs.
set -euo pipefail
action=${1:?usage: cluster.sh start|stop [DIR]}
dir=$(realpath -m "${2:-/tmp/triage-slurm}")
here=$(dirname "$(realpath "$0")")

stop() {
  if [ -e "$dir/owns-etc-slurm-conf" ]; then
    rm -f /etc/slurm/slurm.conf "$dir/owns-etc-slurm-conf"
  fi
  for name in slurmd slurmctld munged; do
    if [ -s "$dir/$name.pid" ]; then
      pid=$(cat "$dir/$name.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$dir/$name.pid"
    fi
  done
}

case "$action" in
start)
  command -v slurmctld > /dev/null || { echo "Slurm is not installed: apt-get install -y slurm-wlm munge" >&2; exit 2; }
  [ "$(id -u)" = 0 ] || { echo "cluster.sh start needs root (Slurm's daemons and munge)" >&2; exit 2; }
  mkdir -p "$dir/state" "$dir/spool"
  trap 'stop' ERR  # a start that fails half-way stops what it started
  host=$(hostname -s)
  memory=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
  cpus=$(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p')
  sed -e "s|@HOST@|$host|g" -e "s|@DIR@|$dir|g" -e "s|@MEMORY@|$memory|g" -e "s|@CPUS@|$cpus|g" \
    "$here/slurm.conf.in" > "$dir/slurm.conf"
  if [ -e /etc/slurm/slurm.conf ] && ! grep -q '^ClusterName=triage-local$' /etc/slurm/slurm.conf; then
    echo "/etc/slurm/slurm.conf belongs to another Slurm: not touching it" >&2; exit 2
  fi
  mkdir -p /etc/slurm && cp "$dir/slurm.conf" /etc/slurm/slurm.conf && touch "$dir/owns-etc-slurm-conf"
  if ! pgrep -x munged > /dev/null; then  # a munged already running (the system's) is used as it is
    [ -s /etc/munge/munge.key ] || { echo "no /etc/munge/munge.key: reinstall munge" >&2; exit 2; }
    mkdir -p /run/munge /var/log/munge && chown munge:munge /run/munge /var/log/munge
    runuser -u munge -- munged --force  # its own places: /run/munge (socket, pid file), /var/log/munge
    cp /run/munge/munged.pid "$dir/munged.pid"  # started here: stopped here
  fi
  slurmctld -f "$dir/slurm.conf"
  slurmd -f "$dir/slurm.conf"
  for _ in $(seq 100); do  # ready when the node takes jobs
    if sinfo -h -o %t 2>/dev/null | grep -q idle; then
      echo "Slurm is up (config: /etc/slurm/slurm.conf, state and logs: $dir)"
      exit 0
    fi
    sleep 0.2
  done
  echo "Slurm did not come up; see $dir/slurmctld.log and $dir/slurmd.log" >&2
  stop
  exit 1
  ;;
stop) stop ;;
*) echo "usage: cluster.sh start|stop [DIR]" >&2; exit 2 ;;
esac
