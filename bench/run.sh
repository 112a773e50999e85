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
#       BENCH_ANCHOR_DIR  directory of anchor-cfssl-pki.sh (default ../../shared/bench-anchors
#                         relative to this script, beside the repository)
# Output: <results>/<UTC time>.txt (the summary, also printed) and <results>/<UTC time>.logs/
#         (the full output of every step). Exit status 1 when any step failed.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
ANCHOR_DIR=${BENCH_ANCHOR_DIR:-$SCRIPT_DIR/../../shared/bench-anchors}
WORKERS=${BENCH_WORKERS:-10 100}
REPS=${BENCH_REPS:-1}
RESULTS=${BENCH_RESULTS:-/tmp/kubetrust-bench/results}
# Upper bound per step; the slowest step here takes a few minutes.
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

# run_step NAME COMMAND... : runs one step under `timeout` in the background, so that a signal to
# this script can stop it by PID, and saves its output to $LOGS/NAME.log. Appends the step's RESULT
# line, or "FAILED <name> exit=<code>", to $RESULT_LINES.
run_step() {
  local name=$1; shift
  local log="$LOGS/$name.log" code=0
  echo "[run] $name: $*" >&2
  timeout --kill-after=30 "$STEP_TIMEOUT_S" "$@" >"$log" 2>&1 &
  STEP_PID=$!
  wait "$STEP_PID" || code=$?
  STEP_PID=""
  local result
  result=$(grep '^RESULT ' "$log" | tail -n 1 || true)
  if (( code != 0 )) || [[ -z "$result" ]]; then
    echo "[run] $name failed with exit code $code; last lines of $log:" >&2
    tail -n 5 "$log" >&2
    echo "FAILED $name exit=$code" >>"$RESULT_LINES"
  else
    echo "[run] $result" >&2
    echo "$result" >>"$RESULT_LINES"
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
      printf "| %-4s | %-32s | %6s | %8s | %8s | %12s | %10s | %11s |\n", "N", "tool", "certs", "wall s", "certs/s", "2nd run s", "ctrl CPU s", "ctrl RSS MB"
      print "| ---- | -------------------------------- | -----: | -------: | -------: | -----------: | ---------: | ----------: |"
    }
    $1 == "FAILED" { printf "| %-4s | %-32s | FAILED (exit %s) |\n", "", $2, substr($3, 6); next }
    $2 == "anchor-cfssl-pki" {
      tool = "cfssl anchor, " field("jobs") " process(es)"
      printf "| %-4s | %-32s | %6s | %8s | %8s | %12s | %10s | %11s |\n", field("N"), tool, field("certs"), field("wall_s"), field("certs_per_s"), "-", "-", "-"
    }
    $2 == "kubetrust-distribute" {
      tool = "kubetrust, " field("algorithm")
      printf "| %-4s | %-32s | %6s | %8s | %8s | %12s | %10s | %11s |\n", field("N"), tool, field("certs"), field("wall_s"), field("certs_per_s"), field("rerun_s"), field("controller_cpu_s"), field("controller_peak_rss_mb")
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
