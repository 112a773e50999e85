/**
 * Stops the background process of a simulated service by the PID in its pid file, for the restart
 * stand-ins of the test harness (etcd-service.js, readyz-service.js).
 */
import * as fs from 'node:fs';

const STOP_POLL_MS = 50;
const STOP_TIMEOUT_MS = 10_000;

/** Tells whether a process with this PID exists. */
export function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Sends SIGTERM to the process named in `pidFile`, waits up to 10 s for it to exit, then sends
 * SIGKILL, and removes the pid file. Does nothing when the file is missing or the process is gone.
 */
export async function stopPidFile(pidFile: string): Promise<void> {
  let pid: number;
  try {
    pid = Number(fs.readFileSync(pidFile, 'utf8'));
  } catch {
    return;
  }
  if (Number.isInteger(pid) && pid > 0 && isRunning(pid)) {
    process.kill(pid, 'SIGTERM');
    for (let waited = 0; waited < STOP_TIMEOUT_MS && isRunning(pid); waited += STOP_POLL_MS) await new Promise((resolve) => setTimeout(resolve, STOP_POLL_MS));
    if (isRunning(pid)) process.kill(pid, 'SIGKILL');
  }
  fs.rmSync(pidFile, { force: true });
}
