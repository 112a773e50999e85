#!/usr/bin/env bash
# bench/run-rollout.sh: `controller distribute` beside the Ansible anchor, one after the other in one
# run on this machine, with a summary of the ratios between them.
#
# For each total host count N in BENCH_HOSTS (3 etcd nodes + 3 masters + N-6 workers), strictly one
# step at a time, because the steps would compete for the same cores:
#   1. distribute-bench.js --nodes N with ECDSA-P256: init + distribute (run 1), then a distribute
#      that must change nothing (run 2)
#   2. anchor-ansible-distribute.sh N with the largest value in BENCH_FORKS: run 1 pushes every file,
#      run 2 must change nothing
#   3. distribute-bench.js --nodes N with RSA-2048
#   4. the anchor with the other BENCH_FORKS values, largest first
# The host counts run in the order given (default 10, 50, 200), so a run cut short still has the
# smaller, most important comparisons. A configuration left out is listed as SKIPPED with the
# reason, never dropped silently.
#
# Env:  BENCH_HOSTS       total host counts, each 7..1022 (default "10 50 200"). The anchor accepts
#                         at most 200 hosts, so above that only kubetrust runs.
#       BENCH_FORKS       Ansible fork counts, each 1..200 (default "5 50")
#       BENCH_SUBNETS     loopback networks of the kubetrust agents as FIRST-LAST third octets, such
#                         as 57-58 for 127.0.57.0/24 to 127.0.58.0/24 (default: distribute-bench's
#                         own, 30-34)
#       BENCH_RESULTS     results directory (default /tmp/kubetrust-bench/results)
#       BENCH_ANCHOR_DIR  directory of anchor-ansible-distribute.sh (default: the anchor directory
#                         shipped beside the repository)
#       ANCHOR_SSH_PORT   loopback port of the anchor's sshd (default 22022)
# Output: <results>/<UTC time>-rollout.txt (the summary, also printed) and
#         <results>/<UTC time>-rollout.logs/ (the full output of every step). Exit status 1 when any
#         step failed.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/common.sh
source "$SCRIPT_DIR/common.sh"
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
ANCHOR_DIR=${BENCH_ANCHOR_DIR:-$SCRIPT_DIR/../../shared/bench-anchors}
HOSTS=${BENCH_HOSTS:-10 50 200}
FORKS=${BENCH_FORKS:-5 50}
SUBNETS=${BENCH_SUBNETS:-}
RESULTS=${BENCH_RESULTS:-/tmp/kubetrust-bench/results}
ANCHOR_PORT=${ANCHOR_SSH_PORT:-22022}
ALGORITHMS="ECDSA-P256 RSA-2048"
# anchor-ansible-distribute.sh accepts 7 to 200 hosts.
ANCHOR_MIN_HOSTS=7
ANCHOR_MAX_HOSTS=200
# distribute-bench.js with its default networks: 6 + 1016 workers.
KUBETRUST_MAX_HOSTS=1022
# The anchor's scratch directories. It wipes them when it starts, and they contain its throwaway SSH
# client key and CA keys, so this script removes them after each anchor step.
ANCHOR_SCRATCH=/tmp/anchor-bench
# Upper bound per step. The anchor bounds each of its two playbook runs at 900 s, and on a 2-core
# VM it took 2.2 to 3.3 minutes per run for N=50.
STEP_TIMEOUT_S=3600
BENCH_JS=$REPO/test/dist/bench

die() { echo "error: $*" >&2; exit 2; }

check_setup() {
  local n forks
  for n in $HOSTS; do
    [[ "$n" =~ ^[0-9]+$ ]] && (( n >= ANCHOR_MIN_HOSTS && n <= KUBETRUST_MAX_HOSTS )) ||
      die "BENCH_HOSTS: \"$n\" is invalid; use total host counts from $ANCHOR_MIN_HOSTS to $KUBETRUST_MAX_HOSTS (the anchor runs only up to $ANCHOR_MAX_HOSTS)"
  done
  [[ -n "${HOSTS// /}" ]] || die "BENCH_HOSTS is empty; use total host counts such as \"10 50 200\""

  for forks in $FORKS; do
    [[ "$forks" =~ ^[0-9]+$ ]] && (( forks >= 1 && forks <= 200 )) || die "BENCH_FORKS: \"$forks\" is invalid; use fork counts from 1 to 200"
  done
  [[ -n "${FORKS// /}" ]] || die "BENCH_FORKS is empty; use fork counts such as \"5 50\""

  [[ -z "$SUBNETS" || "$SUBNETS" =~ ^[0-9]{1,3}-[0-9]{1,3}$ ]] || die "BENCH_SUBNETS: \"$SUBNETS\" is invalid; use FIRST-LAST, such as 57-58"

  (( EUID == 0 )) || die "run this script as root: the anchor's sshd logs in as root with a throwaway key"
  command -v ansible-playbook >/dev/null || die "ansible-playbook is not installed; apt-get install ansible"
  [[ -x /usr/sbin/sshd ]] || die "/usr/sbin/sshd is not installed; apt-get install openssh-server"
  # Debian's sshd refuses to start without its privilege separation directory. The ssh service
  # creates it when it starts, so it is missing where the package was installed without starting it.
  [[ -d /run/sshd ]] ||
    die "/run/sshd, sshd's privilege separation directory, is missing; start the ssh service once or run: mkdir -m 0755 /run/sshd"
  command -v ssh >/dev/null && command -v ssh-keygen >/dev/null || die "ssh and ssh-keygen are not installed; apt-get install openssh-client"
  command -v cfssl >/dev/null && command -v cfssljson >/dev/null ||
    die "cfssl and cfssljson are not installed; the anchor makes its files with them: apt-get install golang-cfssl"
  command -v openssl >/dev/null || die "openssl is not installed; apt-get install openssl"
  command -v node >/dev/null || die "node is not installed"

  [[ -f "$ANCHOR_DIR/anchor-ansible-distribute.sh" && -f "$ANCHOR_DIR/anchor-cfssl-pki.sh" ]] ||
    die "anchor scripts not found in $ANCHOR_DIR; set BENCH_ANCHOR_DIR"
  [[ -f "$REPO/controller/dist/cli.js" && -f "$BENCH_JS/distribute-bench.js" ]] ||
    die "kubetrust is not built; run 'npm run build' in $REPO first"

  if ss -ltnH "sport = :$ANCHOR_PORT" | grep -q .; then
    die "port $ANCHOR_PORT, which the anchor's sshd needs, is already in use; set ANCHOR_SSH_PORT to a free port"
  fi
}

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
SUMMARY="$RESULTS/$STAMP-rollout.txt"
LOGS="$RESULTS/$STAMP-rollout.logs"
SCRATCH=""
CREATED_ANCHOR_SCRATCH=""
STEP_PID=""
RESULT_LINES=""

# stop_session SID : sends SIGTERM to every process still in the session of a finished or stopped
# step, by PID. The anchor's inner `timeout` runs ansible-playbook in a process group of its own, so
# only the session still reaches it once the anchor script has gone.
stop_session() {
  local pid
  for pid in $(pgrep -s "$1" || true); do
    kill -TERM "$pid" 2>/dev/null || true
  done
}

cleanup() {
  if [[ -n "$STEP_PID" ]] && kill -0 "$STEP_PID" 2>/dev/null; then
    kill -TERM "$STEP_PID" 2>/dev/null || true
    wait "$STEP_PID" 2>/dev/null || true
    stop_session "$STEP_PID"
  fi
  [[ -n "$SCRATCH" ]] && rm -rf "$SCRATCH"
  remove_anchor_scratch
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

remove_anchor_scratch() {
  rm -rf "$ANCHOR_SCRATCH/dist" "$ANCHOR_SCRATCH/roots"
  [[ -n "$CREATED_ANCHOR_SCRATCH" ]] && rmdir "$ANCHOR_SCRATCH" 2>/dev/null || true
}

# run_step NAME COMMAND... : runs one step under `timeout` in a session of its own in the background,
# so that a signal to this script can stop it by PID, and saves its output to $LOGS/NAME.log.
# Appends the step's RESULT line, or "FAILED <name> exit=<code>", to $RESULT_LINES.
run_step() {
  local name=$1; shift
  local log="$LOGS/$name.log" code=0 busy started leftover
  busy=$(busy_percent)
  echo "[run] $name (machine busy before it: $busy %): $*" >&2
  started=$(date +%s)
  # A background job of a script is no process group leader, so setsid does not fork and $! is the
  # PID of `timeout`, which leads the new session.
  setsid timeout --kill-after=30 "$STEP_TIMEOUT_S" "$@" >"$log" 2>&1 &
  STEP_PID=$!
  wait "$STEP_PID" || code=$?
  leftover=$(pgrep -s "$STEP_PID" | tr '\n' ' ' || true)
  if [[ -n "$leftover" ]]; then
    echo "[run] $name left processes behind, stopping them: $leftover" >&2
    stop_session "$STEP_PID"
  fi
  STEP_PID=""
  local result
  result=$(grep '^RESULT ' "$log" | tail -n 1 || true)
  if (( code != 0 )) || [[ -z "$result" ]]; then
    echo "[run] $name failed with exit code $code; last lines of $log:" >&2
    tail -n 5 "$log" >&2
    echo "FAILED $name exit=$code busy_before_pct=$busy" >>"$RESULT_LINES"
  else
    echo "[run] $result ($(( $(date +%s) - started )) s)" >&2
    echo "$result busy_before_pct=$busy step_s=$(( $(date +%s) - started ))" >>"$RESULT_LINES"
  fi
}

skip() {
  echo "[run] SKIPPED $*" >&2
  echo "SKIPPED $*" >>"$RESULT_LINES"
}

last_step_failed() {
  tail -n 1 "$RESULT_LINES" | grep -q '^FAILED '
}

# run_kubetrust N ALGORITHM : distribute-bench.js in a fresh scratch directory. Keeps the logs of a
# failed step and removes the scratch directory (CA keys included).
run_kubetrust() {
  local n=$1 algorithm=$2 step="kubetrust-N$1-$2"
  local subnets=()
  [[ -n "$SUBNETS" ]] && subnets=(--subnets "$SUBNETS")
  mkdir -p "$SCRATCH/$step"
  run_step "$step" node "$BENCH_JS/distribute-bench.js" --nodes "$n" --algorithm "$algorithm" "${subnets[@]}" --workdir "$SCRATCH/$step"
  if last_step_failed && [[ -d "$SCRATCH/$step/logs" ]]; then
    cp -r "$SCRATCH/$step/logs" "$LOGS/$step.logs"
  fi
  rm -rf "${SCRATCH:?}/$step"
  sync
}

# run_anchor N FORKS : the Ansible anchor. Keeps its logs of a failed step, then removes its scratch
# directories.
run_anchor() {
  local n=$1 forks=$2 step="ansible-N$1-forks$2"
  if (( n > ANCHOR_MAX_HOSTS )); then
    skip "anchor-ansible-distribute N=$n forks=$forks reason=the anchor script accepts at most $ANCHOR_MAX_HOSTS hosts"
    return
  fi
  run_step "$step" bash "$ANCHOR_DIR/anchor-ansible-distribute.sh" "$n" "$forks"
  if last_step_failed && [[ -d "$ANCHOR_SCRATCH/dist" ]]; then
    mkdir -p "$LOGS/$step.logs"
    cp "$ANCHOR_SCRATCH"/dist/*.log "$ANCHOR_SCRATCH"/dist/*.yml "$ANCHOR_SCRATCH"/dist/*.ini "$LOGS/$step.logs/" 2>/dev/null || true
  fi
  remove_anchor_scratch
  sync
}

machine() {
  echo "date (UTC):   $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "kernel:       $(uname -sr)"
  echo "nproc:        $(nproc)"
  echo "CPU model:    $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)"
  echo "free -h:"
  free -h | sed 's/^/  /'
  echo "file system:  $(df -PT /tmp | awk 'NR == 2 { print $2 }') for /tmp ($(findmnt -no OPTIONS --target /tmp 2>/dev/null || echo 'options unknown'))"
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) (at start)"
  echo "node:         $(node --version)"
  echo "ansible:      $(ansible-playbook --version 2>/dev/null | head -n 1) on $(python3 --version 2>&1)"
  echo "openssh:      $(ssh -V 2>&1)"
  echo "kubetrust:    $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$REPO" status --porcelain 2>/dev/null | grep -q . && echo ' (with uncommitted changes)')"
  if [[ -n "$SUBNETS" ]]; then
    echo "agents on:    127.0.${SUBNETS%-*}.0/24 to 127.0.${SUBNETS#*-}.0/24"
  else
    echo "agents on:    the default networks of distribute-bench.js"
  fi
}

# Prints the fork counts largest first, so that forks 50 runs before forks 5.
forks_largest_first() {
  tr ' ' '\n' <<<"$FORKS" | grep . | sort -rn | uniq | tr '\n' ' '
}

# Reads the RESULT, FAILED and SKIPPED lines on stdin and prints the tables of the summary.
tables() {
  awk -v hosts="$HOSTS" -v forks="$(forks_largest_first)" -v algorithms="$ALGORITHMS" '
    function field(name,   i, kv) {
      for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == name) return kv[2] }
      return ""
    }
    function show(value) { return value == "" ? "-" : value }
    function ratio(a, b) { return (a == "" || b == "" || b + 0 == 0) ? "-" : sprintf("%.1fx", a / b) }
    function per(value, n) { return value == "" ? "-" : sprintf("%.3f", value / n) }
    function target(a, b, want) {
      if (a == "" || b == "" || b + 0 == 0) return ""
      return (a / b >= want) ? sprintf(" (target %dx: met)", want) : sprintf(" (target %dx: not met)", want)
    }
    $2 == "anchor-ansible-distribute" {
      key = field("N") SUBSEP field("forks")
      a1[key] = field("first_wall_s"); a2[key] = field("second_wall_s")
      ac1[key] = field("first_cpu_s"); ab[key] = field("busy_before_pct")
    }
    $2 == "kubetrust-distribute" {
      key = field("nodes") SUBSEP field("algorithm")
      k1[key] = field("wall_s"); kd[key] = field("distribute_s"); k2[key] = field("rerun_s")
      kc[key] = field("controller_cpu_s"); kb[key] = field("busy_before_pct")
    }
    $1 == "FAILED" { failed[++nfailed] = $2 }
    $1 == "SKIPPED" { skipped[++nskipped] = substr($0, 9) }
    END {
      nh = split(hosts, H, " "); nf = split(forks, F, " "); na = split(algorithms, A, " ")

      print "Wall times (s). kubetrust run 1 = controller init + distribute; run 2 = a distribute that"
      print "changes nothing. Ansible run 1 = ansible-playbook pushing every file; run 2 = a run that"
      print "changes nothing. s/node = wall / N. busy = % of both cores busy just before the step."
      print ""
      printf "| %4s | %-26s | %8s | %12s | %8s | %12s | %12s | %4s |\n", "N", "step", "run 1 s", "distribute s", "run 2 s", "run 1 s/node", "run 2 s/node", "busy"
      print "| ---: | -------------------------- | -------: | -----------: | -------: | -----------: | -----------: | ---: |"
      for (h = 1; h <= nh; h++) {
        n = H[h]
        for (a = 1; a <= na; a++) {
          key = n SUBSEP A[a]
          printf "| %4s | %-26s | %8s | %12s | %8s | %12s | %12s | %4s |\n", n, "kubetrust " A[a], show(k1[key]), show(kd[key]), show(k2[key]), per(k1[key], n), per(k2[key], n), show(kb[key])
        }
        for (f = 1; f <= nf; f++) {
          key = n SUBSEP F[f]
          printf "| %4s | %-26s | %8s | %12s | %8s | %12s | %12s | %4s |\n", n, "Ansible forks=" F[f], show(a1[key]), "-", show(a2[key]), per(a1[key], n), per(a2[key], n), show(ab[key])
        }
      }

      print ""
      print "Speed-up = Ansible wall / kubetrust wall, same N. Targets for forks 50: 20x on run 1, 50x on run 2."
      print ""
      printf "| %4s | %5s | %-10s | %-28s | %-28s |\n", "N", "forks", "algorithm", "run 1 speed-up", "run 2 speed-up"
      print "| ---: | ----: | ---------- | ---------------------------- | ---------------------------- |"
      for (h = 1; h <= nh; h++) {
        n = H[h]
        for (f = 1; f <= nf; f++) {
          for (a = 1; a <= na; a++) {
            ak = n SUBSEP F[f]; kk = n SUBSEP A[a]
            t1 = F[f] == 50 ? target(a1[ak], k1[kk], 20) : ""
            t2 = F[f] == 50 ? target(a2[ak], k2[kk], 50) : ""
            printf "| %4s | %5s | %-10s | %-28s | %-28s |\n", n, F[f], A[a], ratio(a1[ak], k1[kk]) t1, ratio(a2[ak], k2[kk]) t2
          }
        }
      }

      if (nh > 1) {
        print ""
        print "Growth from the smallest to the largest N: growth is sub-linear when the wall factor is"
        print "below the host factor."
        print ""
        printf "| %-26s | %9s | %11s | %13s | %13s |\n", "step", "N", "host factor", "run 1 factor", "run 2 factor"
        print "| -------------------------- | --------: | ----------: | ------------: | ------------: |"
        lo = H[1]; hi = H[1]
        for (h = 2; h <= nh; h++) { if (H[h] + 0 < lo + 0) lo = H[h]; if (H[h] + 0 > hi + 0) hi = H[h] }
        for (a = 1; a <= na; a++) {
          l = lo SUBSEP A[a]; u = hi SUBSEP A[a]
          printf "| %-26s | %9s | %11s | %13s | %13s |\n", "kubetrust " A[a], lo "->" hi, ratio(hi, lo), ratio(k1[u], k1[l]), ratio(k2[u], k2[l])
        }
        for (f = 1; f <= nf; f++) {
          l = lo SUBSEP F[f]; u = hi SUBSEP F[f]
          printf "| %-26s | %9s | %11s | %13s | %13s |\n", "Ansible forks=" F[f], lo "->" hi, ratio(hi, lo), ratio(a1[u], a1[l]), ratio(a2[u], a2[l])
        }
      }

      if (nfailed + nskipped > 0) print ""
      for (i = 1; i <= nfailed; i++) print "FAILED: " failed[i]
      for (i = 1; i <= nskipped; i++) print "SKIPPED: " skipped[i]
    }'
}

main() {
  check_setup
  mkdir -p "$RESULTS" "$LOGS" /tmp/kubetrust-bench
  SCRATCH=$(mktemp -d /tmp/kubetrust-bench/scratch.XXXXXX)
  [[ -d "$ANCHOR_SCRATCH" ]] || CREATED_ANCHOR_SCRATCH=yes
  RESULT_LINES="$SCRATCH/results.txt"
  : >"$RESULT_LINES"

  local started n forks first_forks=""
  started=$(date +%s)
  {
    echo "kubetrust distribute beside the Ansible anchor, run $STAMP"
    echo
    machine
  } | tee "$SUMMARY"

  for n in $HOSTS; do
    run_kubetrust "$n" ECDSA-P256
    for forks in $(forks_largest_first); do
      first_forks=$forks
      break
    done
    run_anchor "$n" "$first_forks"
    run_kubetrust "$n" RSA-2048
    for forks in $(forks_largest_first); do
      (( forks == first_forks )) && continue
      run_anchor "$n" "$forks"
    done
  done

  {
    echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) (at end)"
    echo "run time:     $(( $(date +%s) - started )) s"
    echo
    tables <"$RESULT_LINES"
    echo
    echo "RESULT lines:"
    cat "$RESULT_LINES"
    echo
    echo "Logs: $LOGS"
  } | tee -a "$SUMMARY"
  echo "Summary written to $SUMMARY" >&2

  ! grep -q '^FAILED ' "$RESULT_LINES"
}

main "$@"
