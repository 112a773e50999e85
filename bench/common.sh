# Helpers that bench/run.sh and bench/run-rollout.sh share. Sourced, never run.

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
