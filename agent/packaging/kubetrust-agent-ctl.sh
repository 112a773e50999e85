#!/bin/sh
# Starts, stops and reports the kubetrust agent on a host without systemd as PID 1. Rendered by
# renderControlScript (controller/src/agent-install.ts), which replaces @BINARY@, @CONFIG@,
# @PIDFILE@ and @LOGFILE@ with the paths under the node's prefix.
#
# Usage: kubetrust-agent-ctl start|stop|restart|status
# Exit codes: 0 on success (status: the agent runs), 1 on failure, 3 when status finds no agent.
set -u

BINARY='@BINARY@'
CONFIG='@CONFIG@'
PIDFILE='@PIDFILE@'
LOGFILE='@LOGFILE@'
# Seconds that stop waits after SIGTERM before it sends SIGKILL.
STOP_TIMEOUT=30

# Succeeds when process $1 exists and is not a zombie.
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  if [ -r "/proc/$1/stat" ]; then
    state=$(sed 's/.*) //' "/proc/$1/stat" | cut -d' ' -f1)
    [ "$state" != Z ] || return 1
  fi
  return 0
}

# Prints the PID of the running agent and succeeds, or fails when none runs. A PID file can be
# left from an earlier boot, so the process must also run with this agent's configuration.
running_pid() {
  [ -f "$PIDFILE" ] || return 1
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
  case "$pid" in '' | *[!0-9]*) return 1 ;; esac
  alive "$pid" || return 1
  if [ -r "/proc/$pid/cmdline" ]; then
    tr '\000' '\n' <"/proc/$pid/cmdline" | grep -qxF -- "$CONFIG" || return 1
  fi
  echo "$pid"
}

start() {
  if pid=$(running_pid); then
    echo "kubetrust agent is already running (pid $pid)"
    return 0
  fi
  mkdir -p "$(dirname "$PIDFILE")" "$(dirname "$LOGFILE")"
  # setsid puts the agent in a session of its own, so it keeps running after the SSH session
  # that started it ends. nohup, where setsid is missing, only ignores the hang-up signal.
  if command -v setsid >/dev/null 2>&1; then
    setsid "$BINARY" --config "$CONFIG" </dev/null >>"$LOGFILE" 2>&1 &
  else
    nohup "$BINARY" --config "$CONFIG" </dev/null >>"$LOGFILE" 2>&1 &
  fi
  pid=$!
  echo "$pid" >"$PIDFILE.tmp" && mv "$PIDFILE.tmp" "$PIDFILE"
  # NOTE: an invalid configuration or a port in use stops the agent well within this second, but a
  # failure after it shows only in a later status.
  sleep 1
  if alive "$pid"; then
    echo "kubetrust agent started (pid $pid, log $LOGFILE)"
    return 0
  fi
  rm -f "$PIDFILE"
  echo "kubetrust agent exited at start-up; the end of $LOGFILE follows" >&2
  tail -n 20 "$LOGFILE" >&2
  return 1
}

stop() {
  if ! pid=$(running_pid); then
    rm -f "$PIDFILE"
    echo "kubetrust agent is not running"
    return 0
  fi
  kill -TERM "$pid"
  waited=0
  while alive "$pid"; do
    if [ "$waited" -ge "$STOP_TIMEOUT" ]; then
      echo "kubetrust agent (pid $pid) did not stop within ${STOP_TIMEOUT} s of SIGTERM; sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null
      break
    fi
    sleep 1
    waited=$((waited + 1))
  done
  rm -f "$PIDFILE"
  echo "kubetrust agent stopped (pid $pid)"
}

status() {
  if pid=$(running_pid); then
    echo "kubetrust agent is running (pid $pid)"
    return 0
  fi
  echo "kubetrust agent is not running"
  return 3
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop && start ;;
  status) status ;;
  *)
    echo "usage: $0 start|stop|restart|status" >&2
    exit 1
    ;;
esac
