#!/usr/bin/env bash
# bench/run.sh: kubetrust's distribute benchmark and the cfssl anchor, one after the other in one
# run on this machine, with a summary of both.
#
# For each N in BENCH_WORKERS, BENCH_REPS times:
#   1. anchor-cfssl-pki.sh N with ANCHOR_PKI_JOBS=1, then with ANCHOR_PKI_JOBS=2
#   2. npm run bench -- --workers N --algorithm RSA-2048, then with --algorithm ECDSA-P256
# Steps run strictly one at a time, because they would compete for the same cores.
#
# Env:  BENCH_WORKERS     worker counts, each 1..250 (default "10 100")
#       BENCH_REPS        repetitions of every step, 1..5 (default 1)
#       BENCH_RESULTS     results directory (default /tmp/kubetrust-bench/results)
#       BENCH_ANCHOR_DIR  directory of anchor-cfssl-pki.sh (default: the anchor directory
#                         shipped beside the repository)
# Output: <results>/<UTC time>.txt (the summary, also printed) and <results>/<UTC time>.logs/
#         (the full output of every step). Exit status 1 when any step failed.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
ANCHOR_DIR=${BENCH_ANCHOR_DIR:-$SCRIPT_DIR/../../shared/bench-anchors}
WORKERS=${BENCH_WORKERS:-10 100}
REPS=${BENCH_REPS:-1}
RESULTS=${BENCH_RESULTS:-/tmp/kubetrust-bench/results}
# Upper bound per step. The slowest step, N=100 with RSA-2048 keys, took about 80 s on a 2-core VM.
STEP_TIMEOUT_S=1800

die() { echo "error: $*" >&2; exit 2; }

check_setup() {
  local n
  for n in $WORKERS; do
    [[ "$n" =~ ^[0-9]+$ ]] && (( n >= 1 && n <= 250 )) || die "BENCH_WORKERS: \"$n\" is invalid; use worker counts from 1 to 250"
  done
  [[ "$REPS" =~ ^[0-9]+$ ]] && (( REPS >= 1 && REPS <= 5 )) || die "BENCH_REPS: \"$REPS\" is invalid; use 1 to 5"
  command -v cfssl >/dev/null && command -v cfssljson >/dev/null ||
    die "cfssl and cfssljson are not installed; the anchor needs them: apt-get install golang-cfssl"
  command -v openssl >/dev/null || die "openssl is not installed; apt-get install openssl"
  command -v node >/dev/null || die "node is not installed"
  [[ -f "$ANCHOR_DIR/anchor-cfssl-pki.sh" ]] ||
    die "anchor script not found at $ANCHOR_DIR/anchor-cfssl-pki.sh; set BENCH_ANCHOR_DIR"
  [[ -f "$REPO/controller/dist/cli.js" && -f "$REPO/test/dist/bench/distribute-bench.js" ]] ||
    die "kubetrust is not built; run 'npm run build' in $REPO first"
}

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
SUMMARY="$RESULTS/$STAMP.txt"
LOGS="$RESULTS/$STAMP.logs"
SCRATCH=""
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
  [[ -n "$ANCHOR_OUT" ]] && rm -rf "$ANCHOR_OUT"
  [[ -n "$CREATED_ANCHOR_ROOT" ]] && rmdir /tmp/anchor-bench 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Prints the share of all cores busy over one second, in percent, while this script runs no step:
# work by other programs on the machine. iowait counts as idle.
busy_percent() {
  local a b
  a=$(head -n 1 /proc/stat)
  sleep 1
  b=$(head -n 1 /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN {
    split(a, x); split(b, y)
    busy = (y[2] + y[3] + y[4] + y[7] + y[8] + y[9]) - (x[2] + x[3] + x[4] + x[7] + x[8] + x[9])
    idle = (y[5] + y[6]) - (x[5] + x[6])
    printf "%.0f", (busy + idle > 0) ? 100 * busy / (busy + idle) : 0 }'
}

# run_step NAME COMMAND... : runs one step under `timeout` in the background, so that a signal to
# this script can stop it by PID, and saves its output to $LOGS/NAME.log. Appends the step's RESULT
# line, or "FAILED <name> exit=<code>", to $RESULT_LINES.
run_step() {
  local name=$1; shift
  local log="$LOGS/$name.log" code=0 busy
  busy=$(busy_percent)
  echo "[run] $name (machine busy before it: $busy %): $*" >&2
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
    echo "[run] $result" >&2
    echo "$result busy_before_pct=$busy" >>"$RESULT_LINES"
  fi
}

machine() {
  echo "date (UTC):   $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "kernel:       $(uname -sr)"
  echo "nproc:        $(nproc)"
  echo "CPU model:    $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)"
  echo "free -h:"
  free -h | sed 's/^/  /'
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
    BEGIN {
      printf "| %-4s | %-32s | %6s | %8s | %8s | %9s | %10s | %11s | %6s |\n", "N", "tool", "certs", "wall s", "certs/s", "2nd run s", "ctrl CPU s", "ctrl RSS MB", "busy %"
      print "| ---- | -------------------------------- | -----: | -------: | -------: | --------: | ---------: | ----------: | -----: |"
    }
    $1 == "FAILED" { printf "| %-4s | %-32s | failed, exit code %s |\n", "", $2, substr($3, 6); next }
    $2 == "anchor-cfssl-pki" {
      tool = "cfssl anchor, " field("jobs") " process(es)"
      printf "| %-4s | %-32s | %6s | %8s | %8s | %9s | %10s | %11s | %6s |\n", field("N"), tool, field("certs"), field("wall_s"), field("certs_per_s"), "-", "-", "-", field("busy_before_pct")
    }
    $2 == "kubetrust-distribute" {
      tool = "kubetrust, " field("algorithm")
      printf "| %-4s | %-32s | %6s | %8s | %8s | %9s | %10s | %11s | %6s |\n", field("N"), tool, field("certs"), field("wall_s"), field("certs_per_s"), field("rerun_s"), field("controller_cpu_s"), field("controller_peak_rss_mb"), field("busy_before_pct")
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

  local started n rep jobs algorithm step
  started=$(date +%s)
  {
    echo "kubetrust distribute benchmark beside the cfssl anchor, run $STAMP"
    echo
    machine
  } | tee "$SUMMARY"

  for n in $WORKERS; do
    for ((rep = 1; rep <= REPS; rep++)); do
      for jobs in 1 2; do
        step="anchor-N$n-jobs$jobs-rep$rep"
        ANCHOR_PKI_OUT="$ANCHOR_OUT" ANCHOR_PKI_JOBS=$jobs run_step "$step" bash "$ANCHOR_DIR/anchor-cfssl-pki.sh" "$n"
      done
      for algorithm in RSA-2048 ECDSA-P256; do
        step="kubetrust-N$n-$algorithm-rep$rep"
        mkdir -p "$SCRATCH/$step"
        run_step "$step" node "$REPO/test/dist/bench/distribute-bench.js" \
          --workers "$n" --algorithm "$algorithm" --workdir "$SCRATCH/$step"
        # Keep the controller and agent logs of a failed step; the rest (CA keys included) goes.
        if tail -n 1 "$RESULT_LINES" | grep -q '^FAILED ' && [[ -d "$SCRATCH/$step/logs" ]]; then
          cp -r "$SCRATCH/$step/logs" "$LOGS/$step.logs"
        fi
        rm -rf "${SCRATCH:?}/$step"
      done
    done
  done

  {
    echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) (at end)"
    echo "run time:     $(( $(date +%s) - started )) s"
    echo
    echo "Wall time: cfssl anchor = generating all keys and certificates; kubetrust = controller init +"
    echo "controller distribute run 1 (agents generate the node keys). 2nd run s = a distribute that"
    echo "changes nothing. ctrl = the controller process (init + run 1 CPU; peak RSS over all runs)."
    echo "busy % = share of both cores busy during 1 s just before the step, while no step ran"
    echo "(work by other programs on the machine)."
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
