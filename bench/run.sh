#!/usr/bin/env bash
# bench/run.sh: kubetrust's benchmarks and the cfssl anchor, one after the other in one run on
# this machine, with a summary of all of them.
#
# Steps, strictly one at a time, because they would compete for the same cores:
#   1. keygen-limit.js: the median time of one native RSA-2048 and one P-256 key generation
#   2. for each N in BENCH_WORKERS, BENCH_REPS times (N >= 1000: once):
#      a. anchor-cfssl-pki.sh N with ANCHOR_PKI_JOBS=1, then 2 (only N <= 250, the anchor's limit)
#      b. offline-bench.js: `controller issue --out` with RSA-2048, then ECDSA-P256
#      c. distribute-bench.js: init + distribute with RSA-2048 (only N <= BENCH_DISTRIBUTE_RSA_MAX),
#         then ECDSA-P256
#   3. when NODE_EXTRA_CA_CERTS is set, distribute-bench.js for the smallest N with ECDSA-P256 once
#      more, with the variable kept for the controller, which every other step starts without it
#   4. for the largest N, offline-bench.js with ECDSA-P256 once more with its files on tmpfs
#      (/dev/shm), which shows what the disk's fsyncs cost
#   5. agent-idle.js: the resident memory and CPU ticks of idle agent processes after a distribute
#   6. keygen-limit.js again, to show how far the machine's speed drifted during the run
# A configuration left out is listed as SKIPPED with the reason, never dropped silently.
#
# Env:  BENCH_WORKERS             worker counts, each 1..1016 (default "10 100 1000")
#       BENCH_REPS                repetitions of every step for N < 1000, 1..5 (default 1)
#       BENCH_DISTRIBUTE_RSA_MAX  largest N for a distribute with RSA-2048 keys (default 250)
#       BENCH_SUBNETS             loopback /24 networks of the distribute agents, FIRST-LAST by third
#                                 octet (default 30-34)
#       BENCH_RESULTS             results directory (default /tmp/kubetrust-bench/results)
#       BENCH_ANCHOR_DIR          directory of anchor-cfssl-pki.sh (default: the anchor directory
#                                 shipped beside the repository)
#       BENCH_IDLE_S              idle window of agent-idle.js in seconds (default 60)
# Output: <results>/<UTC time>.txt (the summary, also printed) and <results>/<UTC time>.logs/
#         (the full output of every step). Exit status 1 when any step failed.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/common.sh
source "$SCRIPT_DIR/common.sh"
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
ANCHOR_DIR=${BENCH_ANCHOR_DIR:-$SCRIPT_DIR/../../shared/bench-anchors}
WORKERS=${BENCH_WORKERS:-10 100 1000}
REPS=${BENCH_REPS:-1}
DISTRIBUTE_RSA_MAX=${BENCH_DISTRIBUTE_RSA_MAX:-250}
RESULTS=${BENCH_RESULTS:-/tmp/kubetrust-bench/results}
SUBNETS=${BENCH_SUBNETS:-30-34}
IDLE_S=${BENCH_IDLE_S:-60}
# The anchor script accepts at most 250 workers, which it puts in one /24.
ANCHOR_MAX_WORKERS=250
# Worker counts from here on run each step once, whatever BENCH_REPS sets.
LARGE_N=1000
# Upper bound per step. The slowest step, the offline issue of N=1000 with RSA-2048 keys, took
# about 4 minutes on a 2-core VM.
STEP_TIMEOUT_S=3600
TMPFS=/dev/shm
BENCH_JS=$REPO/test/dist/bench

die() { echo "error: $*" >&2; exit 2; }

check_setup() {
  local n
  for n in $WORKERS; do
    [[ "$n" =~ ^[0-9]+$ ]] && (( n >= 1 && n <= 1016 )) || die "BENCH_WORKERS: \"$n\" is invalid; use worker counts from 1 to 1016"
  done
  [[ "$REPS" =~ ^[0-9]+$ ]] && (( REPS >= 1 && REPS <= 5 )) || die "BENCH_REPS: \"$REPS\" is invalid; use 1 to 5"
  [[ "$SUBNETS" =~ ^[0-9]+-[0-9]+$ ]] || die "BENCH_SUBNETS: \"$SUBNETS\" is invalid; use FIRST-LAST third octets, such as 30-34"
  [[ "$DISTRIBUTE_RSA_MAX" =~ ^[0-9]+$ ]] || die "BENCH_DISTRIBUTE_RSA_MAX: \"$DISTRIBUTE_RSA_MAX\" is invalid; use a worker count"
  [[ "$IDLE_S" =~ ^[0-9]+$ ]] && (( IDLE_S >= 1 )) || die "BENCH_IDLE_S: \"$IDLE_S\" is invalid; use a number of seconds from 1"
  command -v cfssl >/dev/null && command -v cfssljson >/dev/null ||
    die "cfssl and cfssljson are not installed; the anchor needs them: apt-get install golang-cfssl"
  command -v openssl >/dev/null || die "openssl is not installed; apt-get install openssl"
  command -v node >/dev/null || die "node is not installed"
  [[ -f "$ANCHOR_DIR/anchor-cfssl-pki.sh" ]] ||
    die "anchor script not found at $ANCHOR_DIR/anchor-cfssl-pki.sh; set BENCH_ANCHOR_DIR"
  local script
  for script in keygen-limit offline-bench distribute-bench agent-idle; do
    [[ -f "$REPO/controller/dist/cli.js" && -f "$BENCH_JS/$script.js" ]] ||
      die "kubetrust is not built; run 'npm run build' in $REPO first"
  done
}

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
SUMMARY="$RESULTS/$STAMP.txt"
LOGS="$RESULTS/$STAMP.logs"
SCRATCH=""
TMPFS_SCRATCH=""
ANCHOR_OUT=""
CREATED_ANCHOR_ROOT=""
STEP_PID=""
RESULT_LINES=""

cleanup() {
  if [[ -n "$STEP_PID" ]] && kill -0 "$STEP_PID" 2>/dev/null; then
    kill -TERM "$STEP_PID" 2>/dev/null || true
    wait "$STEP_PID" 2>/dev/null || true
  fi
  [[ -n "$SCRATCH" ]] && rm -rf "$SCRATCH"
  [[ -n "$TMPFS_SCRATCH" ]] && rm -rf "$TMPFS_SCRATCH"
  [[ -n "$ANCHOR_OUT" ]] && rm -rf "$ANCHOR_OUT"
  [[ -n "$CREATED_ANCHOR_ROOT" ]] && rmdir /tmp/anchor-bench 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# run_step NAME COMMAND... : runs one step under `timeout` in the background, so that a signal to
# this script can stop it by PID, and saves its output to $LOGS/NAME.log. Appends the step's RESULT
# line, or "FAILED <name> exit=<code>", to $RESULT_LINES.
run_step() {
  local name=$1; shift
  local log="$LOGS/$name.log" code=0 busy started
  busy=$(busy_percent)
  echo "[run] $name (machine busy before it: $busy %): $*" >&2
  started=$(date +%s)
  timeout --kill-after=30 "$STEP_TIMEOUT_S" "$@" >"$log" 2>&1 &
  STEP_PID=$!
  wait "$STEP_PID" || code=$?
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

# run_kubetrust SCRIPT STEP SCRATCH_PARENT ARGS... : runs a kubetrust benchmark in a fresh scratch
# directory, keeps the logs of a failed step and removes the scratch directory (CA keys included).
run_kubetrust() {
  local script=$1 step=$2 parent=$3; shift 3
  mkdir -p "$parent/$step"
  run_step "$step" node "$BENCH_JS/$script.js" "$@" --workdir "$parent/$step"
  if tail -n 1 "$RESULT_LINES" | grep -q '^FAILED ' && [[ -d "$parent/$step/logs" ]]; then
    cp -r "$parent/$step/logs" "$LOGS/$step.logs"
  fi
  rm -rf "${parent:?}/$step"
  # Deleting thousands of files leaves work for the file system, and this VM's ext4 is mounted with
  # discard. sync lets that work finish before the next step's fsyncs.
  sync
}

# Prints the offline benchmark's --key-median-ms for RSA-2048 from the first keygen-limit step. ECDSA
# gets none, because a P-256 key takes well under a millisecond and that limit is no useful bound.
key_median_args() {
  local median
  [[ $1 == RSA-2048 ]] || return 0
  median=$(grep '^RESULT keygen-limit ' "$RESULT_LINES" | head -n 1 | tr ' ' '\n' | sed -n 's/^rsa2048_median_ms=//p')
  if [[ -n "$median" ]]; then echo "--key-median-ms $median"; fi
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
  echo "openssl:      $(openssl version)"
  echo "cfssl:        $(cfssl version | tr '\n' ' ')"
  echo "kubetrust:    $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$REPO" status --porcelain 2>/dev/null | grep -q . && echo ' (with uncommitted changes)')"
}

# Reads key=value fields from RESULT lines and prints one table row per line.
table() {
  awk '
    function field(name,   i, kv) {
      for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == name) return kv[2] }
      return "-"
    }
    function row(n, tool, certs, wall, rate, ratio, cpu, perCert, rss, loop) {
      printf "| %-4s | %-40s | %5s | %7s | %8s | %7s | %7s | %7s | %5s | %6s | %4s |\n", n, tool, certs, wall, rate, ratio, cpu, perCert, rss, loop, field("busy_before_pct")
    }
    BEGIN {
      printf "| %-4s | %-40s | %5s | %7s | %8s | %7s | %7s | %7s | %5s | %6s | %4s |\n", "N", "step", "certs", "wall s", "certs/s", "x limit", "CPU s", "ms/cert", "RSS", "loop", "busy"
      print "| ---- | ---------------------------------------- | ----: | ------: | -------: | ------: | ------: | ------: | ----: | -----: | ---: |"
    }
    $1 == "FAILED" { printf "| %-4s | %-40s | failed, exit code %s |\n", "", $2, substr($3, 6); next }
    $1 == "SKIPPED" { printf "| %-4s | %-40s | skipped: %s |\n", substr($3, 3), $2 " " $4, substr($0, index($0, "reason=") + 7); next }
    $2 == "keygen-limit" {
      printf "| %-4s | %-40s | RSA-2048 median %s ms (mean %s), P-256 median %s ms, %s cores |\n", "", "native key generation, one at a time", field("rsa2048_median_ms"), field("rsa2048_mean_ms"), field("p256_median_ms"), field("cores")
    }
    $2 == "anchor-cfssl-pki" {
      row(field("N"), "cfssl anchor, " field("jobs") " process(es)", field("certs"), field("wall_s"), field("certs_per_s"), "-", "-", "-", "-", "-")
    }
    $2 == "kubetrust-offline" {
      tool = "kubetrust issue --out, " field("algorithm") (field("storage") == "tmpfs" ? ", tmpfs" : "")
      row(field("N"), tool, field("certs"), field("wall_s"), field("certs_per_s"), field("ratio"), field("controller_cpu_s"), field("cpu_ms_per_cert"), field("controller_peak_rss_mb"), field("loop_max_ms"))
    }
    $2 == "agent-idle" {
      printf "| %-4s | %-40s | %s agents idle: RSS %s MB (start %s, after distribute %s, bare node %s), CPU %s ticks in %s s |\n", "", "agent processes, idle", field("agents"), field("idle_rss_mb"), field("start_rss_mb"), field("distributed_rss_mb"), field("floor_rss_mb"), field("idle_cpu_ticks"), field("idle_s")
    }
    $2 == "kubetrust-distribute" {
      tool = "kubetrust init + distribute, " field("algorithm") (field("node_extra_ca_certs") == "kept" ? ", extra CAs" : "")
      row(field("N"), tool, field("certs"), field("wall_s"), field("certs_per_s"), "-", field("distribute_cpu_s"), field("cpu_ms_per_cert"), field("controller_peak_rss_mb"), field("loop_max_ms"))
    }'
}

main() {
  check_setup
  mkdir -p "$RESULTS" "$LOGS" /tmp/kubetrust-bench
  SCRATCH=$(mktemp -d /tmp/kubetrust-bench/scratch.XXXXXX)
  [[ -d /tmp/anchor-bench ]] || CREATED_ANCHOR_ROOT=yes
  # The anchor accepts only output directories below /tmp/anchor-bench/ and wipes the one it gets.
  ANCHOR_OUT=/tmp/anchor-bench/pki-kubetrust-run.$$
  RESULT_LINES="$SCRATCH/results.txt"
  : >"$RESULT_LINES"

  local started n rep reps jobs algorithm largest=0 smallest
  started=$(date +%s)
  {
    echo "kubetrust benchmarks beside the cfssl anchor, run $STAMP"
    echo
    machine
  } | tee "$SUMMARY"

  run_step keygen-limit-start node "$BENCH_JS/keygen-limit.js"

  for n in $WORKERS; do
    (( n > largest )) && largest=$n
    reps=$REPS
    (( n >= LARGE_N )) && reps=1
    for ((rep = 1; rep <= reps; rep++)); do
      for jobs in 1 2; do
        if (( n <= ANCHOR_MAX_WORKERS )); then
          ANCHOR_PKI_OUT="$ANCHOR_OUT" ANCHOR_PKI_JOBS=$jobs run_step "anchor-N$n-jobs$jobs-rep$rep" bash "$ANCHOR_DIR/anchor-cfssl-pki.sh" "$n"
        elif (( rep == 1 )); then
          skip "anchor-cfssl-pki N=$n jobs=$jobs reason=the anchor script accepts at most $ANCHOR_MAX_WORKERS workers"
        fi
      done
      for algorithm in RSA-2048 ECDSA-P256; do
        # shellcheck disable=SC2046 # the key median arguments are two words or none
        run_kubetrust offline-bench "offline-N$n-$algorithm-rep$rep" "$SCRATCH" --workers "$n" --algorithm "$algorithm" $(key_median_args "$algorithm")
      done
      for algorithm in RSA-2048 ECDSA-P256; do
        if [[ $algorithm == RSA-2048 ]] && (( n > DISTRIBUTE_RSA_MAX )); then
          (( rep == 1 )) && skip "kubetrust-distribute N=$n algorithm=RSA-2048 reason=the agents would generate $(( 30 + 3 * n )) RSA keys on this machine's cores; raise BENCH_DISTRIBUTE_RSA_MAX to run it"
          continue
        fi
        run_kubetrust distribute-bench "distribute-N$n-$algorithm-rep$rep" "$SCRATCH" --workers "$n" --algorithm "$algorithm" --subnets "$SUBNETS"
      done
    done
  done

  # The kubetrust steps start the controller without NODE_EXTRA_CA_CERTS. When this environment sets
  # it, the smallest distribute runs once more with it, to show what it costs.
  if [[ -n "${NODE_EXTRA_CA_CERTS:-}" ]]; then
    for n in $WORKERS; do smallest=$n; break; done
    for n in $WORKERS; do (( n < smallest )) && smallest=$n; done
    run_kubetrust distribute-bench "distribute-N$smallest-ECDSA-P256-extra-ca-certs" "$SCRATCH" --workers "$smallest" --algorithm ECDSA-P256 --subnets "$SUBNETS" --keep-node-extra-ca-certs
  else
    skip "kubetrust-distribute N=- algorithm=ECDSA-P256 reason=NODE_EXTRA_CA_CERTS is not set, so there is no run with it to compare"
  fi

  if [[ -d "$TMPFS" && -w "$TMPFS" ]] && (( largest > 0 )); then
    TMPFS_SCRATCH=$(mktemp -d "$TMPFS/kubetrust-bench.XXXXXX")
    run_kubetrust offline-bench "offline-N$largest-ECDSA-P256-tmpfs" "$TMPFS_SCRATCH" --workers "$largest" --algorithm ECDSA-P256
  else
    skip "kubetrust-offline N=$largest algorithm=ECDSA-P256 reason=$TMPFS is not a writable directory, so the tmpfs comparison was not run"
  fi

  run_kubetrust agent-idle agent-idle "$SCRATCH" --idle-s "$IDLE_S"

  run_step keygen-limit-end node "$BENCH_JS/keygen-limit.js"

  {
    echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) (at end)"
    echo "run time:     $(( $(date +%s) - started )) s"
    echo
    echo "certs: anchor = 13+N certificates, kubetrust issue = the certificates issued (init, not timed,"
    echo "made the CAs), kubetrust init + distribute = issued certificates plus the 4 CAs of init."
    echo "wall s: anchor = generating all keys and certificates; kubetrust issue = controller issue --out"
    echo "(the controller generates every node key); init + distribute = controller init + distribute"
    echo "run 1 (the agents generate the node keys). x limit = wall time / (keys x median native key time"
    echo "/ cores). CPU s and ms/cert: the controller process (for distribute, run 1 only, per issued"
    echo "certificate). RSS: controller peak in MB. loop: the controller's longest event-loop delay in ms"
    echo "while issuing. busy: share of both cores busy during 1 s just before the step, while no step"
    echo "ran (work by other programs on the machine). The controller runs without NODE_EXTRA_CA_CERTS,"
    echo "except in the step marked \"extra CAs\", which keeps this environment's value."
    echo
    table <"$RESULT_LINES"
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
