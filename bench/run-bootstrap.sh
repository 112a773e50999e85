#!/usr/bin/env bash
# bench/run-bootstrap.sh: `controller bootstrap` beside an Ansible playbook that installs the same
# agent on the same hosts, in one run of test/dist/bench/bootstrap-bench.js, with a summary table.
#
# The benchmark starts BENCH_NODES sshd nodes in network namespaces (3 etcd nodes, 3 masters, the
# rest workers) and times two bootstrap runs (install, then no change). It then removes the agents
# and, for each fork count, times two runs of bench/ansible/bootstrap-agent.yml the same way.
#
# Env:  BENCH_NODES    total node count, 7..250 (default 20)
#       BENCH_FORKS    Ansible fork counts separated by spaces, each 1..500 (default "20 5")
#       BENCH_RESULTS  results directory (default /tmp/kubetrust-bench/results)
# Output: <results>/<UTC time>-bootstrap.txt (the summary, also printed) and
#         <results>/<UTC time>-bootstrap.log (the benchmark's full output). Exit status 1 when the
#         benchmark failed.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/common.sh
source "$SCRIPT_DIR/common.sh"
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
NODES=${BENCH_NODES:-20}
FORKS=${BENCH_FORKS:-20 5}
RESULTS=${BENCH_RESULTS:-/tmp/kubetrust-bench/results}
BENCH_JS=$REPO/test/dist/bench/bootstrap-bench.js
# Upper bound of the whole benchmark. At 20 nodes on a 2-core VM it took about 8 minutes with
# forks 20 alone.
STEP_TIMEOUT_S=3600

die() { echo "error: $*" >&2; exit 2; }

check_setup() {
  local forks
  [[ "$NODES" =~ ^[0-9]+$ ]] && (( NODES >= 7 && NODES <= 250 )) || die "BENCH_NODES: \"$NODES\" is invalid; use a node count from 7 to 250"
  for forks in $FORKS; do
    [[ "$forks" =~ ^[0-9]+$ ]] && (( forks >= 1 && forks <= 500 )) || die "BENCH_FORKS: \"$forks\" is invalid; use fork counts from 1 to 500"
  done
  [[ -n "${FORKS// /}" ]] || die "BENCH_FORKS is empty; use fork counts such as \"20 5\""
  (( EUID == 0 )) || die "run this script as root: the benchmark creates network namespaces and starts sshd"
  command -v ip >/dev/null || die "ip is not installed; apt-get install iproute2"
  [[ -x /usr/sbin/sshd ]] || die "/usr/sbin/sshd is not installed; apt-get install openssh-server"
  command -v ssh >/dev/null && command -v ssh-keygen >/dev/null || die "ssh and ssh-keygen are not installed; apt-get install openssh-client"
  command -v ansible-playbook >/dev/null || die "ansible-playbook is not installed; apt-get install ansible"
  command -v node >/dev/null || die "node is not installed"
  [[ -f "$REPO/controller/dist/cli.js" && -f "$BENCH_JS" ]] || die "kubetrust is not built; run 'npm run build' in $REPO first"
}

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
SUMMARY="$RESULTS/$STAMP-bootstrap.txt"
LOG="$RESULTS/$STAMP-bootstrap.log"
STEP_PID=""

cleanup() {
  # SIGTERM lets the benchmark stop its agents and sshd processes and delete its namespaces.
  if [[ -n "$STEP_PID" ]] && kill -0 "$STEP_PID" 2>/dev/null; then
    kill -TERM "$STEP_PID" 2>/dev/null || true
    wait "$STEP_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

machine() {
  echo "date (UTC):   $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "kernel:       $(uname -sr)"
  echo "nproc:        $(nproc)"
  echo "CPU model:    $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)"
  echo "free -h:"
  free -h | sed 's/^/  /'
  echo "file system:  $(df -PT /tmp | awk 'NR == 2 { print $2 }') for /tmp"
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) (at start)"
  echo "node:         $(node --version)"
  # ansible-playbook creates its local temporary directory even for --version, so it goes to a scratch one.
  local scratch
  scratch=$(mktemp -d)
  echo "ansible:      $(ANSIBLE_HOME="$scratch" ANSIBLE_LOCAL_TEMP="$scratch/tmp" ansible-playbook --version 2>/dev/null | head -n 1)"
  rm -rf "$scratch"
  echo "openssh:      $(ssh -V 2>&1)"
  echo "kubetrust:    $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$REPO" status --porcelain 2>/dev/null | grep -q . && echo ' (with uncommitted changes)')"
}

# Reads the RESULT lines on stdin and prints kubetrust beside each Ansible fork count.
table() {
  awk '
    function field(name,   i, kv) {
      for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == name) return kv[2] }
      return ""
    }
    function ratio(a, b) { return (a == "" || b == "" || b + 0 == 0) ? "-" : sprintf("%.1fx", a / b) }
    $2 == "kubetrust-bootstrap" { k1 = field("wall_s"); k2 = field("rerun_s"); n = field("nodes"); kb = field("busy_before_pct") }
    $2 == "ansible-bootstrap" { f[++nf] = field("forks"); a1[nf] = field("first_wall_s"); a2[nf] = field("second_wall_s"); ab[nf] = field("busy_before_pct") }
    END {
      print "Wall times (s) for " n " nodes. Run 1 installs and starts every agent; run 2 changes nothing."
      print "Ratio = Ansible wall / kubetrust wall. busy = % of both cores busy just before the run 1."
      print ""
      printf "| %-18s | %8s | %8s | %11s | %11s | %4s |\n", "step", "run 1 s", "run 2 s", "run 1 ratio", "run 2 ratio", "busy"
      print "| ------------------ | -------: | -------: | ----------: | ----------: | ---: |"
      printf "| %-18s | %8s | %8s | %11s | %11s | %4s |\n", "kubetrust", k1, k2, "", "", kb
      for (i = 1; i <= nf; i++) printf "| %-18s | %8s | %8s | %11s | %11s | %4s |\n", "Ansible forks " f[i], a1[i], a2[i], ratio(a1[i], k1), ratio(a2[i], k2), ab[i]
    }'
}

main() {
  check_setup
  mkdir -p "$RESULTS"
  local started busy code=0
  started=$(date +%s)
  {
    echo "kubetrust bootstrap beside Ansible, run $STAMP"
    echo
    machine
  } | tee "$SUMMARY"

  busy=$(busy_percent)
  echo "[run] bootstrap-bench.js --nodes $NODES --forks ${FORKS// /,} (machine busy before it: $busy %)" >&2
  timeout --kill-after=60 "$STEP_TIMEOUT_S" node "$BENCH_JS" --nodes "$NODES" --forks "$(echo $FORKS | tr ' ' ',')" >"$LOG" 2>&1 &
  STEP_PID=$!
  wait "$STEP_PID" || code=$?
  STEP_PID=""

  {
    echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) (at end)"
    echo "run time:     $(( $(date +%s) - started )) s"
    echo "busy before:  $busy %"
    echo
    if (( code != 0 )); then
      echo "FAILED bootstrap-bench exit=$code; last lines of $LOG:"
      tail -n 5 "$LOG"
    else
      grep '^RESULT ' "$LOG" | table
      echo
      sed -n '/^kubetrust bootstrap beside Ansible/,$p' "$LOG" | grep -v '^RESULT '
      echo
      echo "RESULT lines:"
      grep '^RESULT ' "$LOG"
    fi
    echo
    echo "Log: $LOG"
  } | tee -a "$SUMMARY"
  echo "Summary written to $SUMMARY" >&2
  (( code == 0 ))
}

main "$@"
