/**
 * Opt-in measurement for benchmarks: with KUBETRUST_EVENT_LOOP_REPORT=FILE in the environment, the
 * controller writes one JSON document to FILE when the process exits. It contains the event loop's
 * delay histogram (perf_hooks.monitorEventLoopDelay), the longest gap between two runs of a
 * setInterval callback, and the process's CPU time and peak RSS (process.resourceUsage). Commands
 * mark where their main work starts with markEventLoopPhase, and the report gives both figures and
 * the CPU time per phase. Both monitors start when runController is called, so loading the modules before that is not
 * covered. Unset, nothing is measured or written.
 *
 * With KUBETRUST_EVENT_LOOP_MONITORS=off as well, the report keeps the CPU times and leaves out
 * both monitors. Their timers wake the process 200 times a second, which cost about 8 ms of CPU per
 * second on a 2-vCPU VM while the controller waited for its agents.
 */
import * as fs from 'node:fs';
import { monitorEventLoopDelay, performance, type IntervalHistogram } from 'node:perf_hooks';

export const EVENT_LOOP_REPORT_ENV = 'KUBETRUST_EVENT_LOOP_REPORT';
/** Set to `off` to measure CPU times without the two monitors. */
export const EVENT_LOOP_MONITORS_ENV = 'KUBETRUST_EVENT_LOOP_MONITORS';

/** Sampling interval of both monitors, in milliseconds. */
const RESOLUTION_MS = 5;

export interface EventLoopPhase {
  /** `startup` until the first mark, then the name given to markEventLoopPhase. */
  readonly name: string;
  /** Milliseconds from the start of the measurement. */
  readonly startMs: number;
  readonly endMs: number;
  /**
   * monitorEventLoopDelay figures in milliseconds. The histogram records nothing before its first
   * sample, so a block right at the start of the process shows only in intervalGapMaxMs.
   */
  readonly delayMaxMs: number;
  readonly delayP99Ms: number;
  /** Maximum time between two interval callbacks minus the interval, in milliseconds. */
  readonly intervalGapMaxMs: number;
  /**
   * Milliseconds of that longest gap that the main thread spent running on a CPU, and runnable but
   * waiting for one, from /proc/thread-self/schedstat. For the rest it slept, in epoll or a system
   * call. A gap spent mostly waiting came from other threads or programs holding the cores, not
   * from code that blocked the loop. Absent where schedstat is not available.
   */
  readonly intervalGapMaxRunMs?: number;
  readonly intervalGapMaxWaitMs?: number;
  /** User plus system CPU time of the process during the phase, in milliseconds. */
  readonly cpuMs: number;
}

export interface EventLoopReport {
  readonly argv: readonly string[];
  /** Milliseconds from the start of the measurement to process exit. */
  readonly wallMs: number;
  readonly resolutionMs: number;
  /** False when KUBETRUST_EVENT_LOOP_MONITORS=off left out both monitors, whose figures are then 0. */
  readonly monitors: boolean;
  /**
   * User plus system CPU time of the process before the measurement started, in milliseconds:
   * Node's own start-up and loading the modules.
   */
  readonly cpuBeforeMs: number;
  /** The largest figures over all phases, in milliseconds. */
  readonly delayMaxMs: number;
  readonly intervalGapMaxMs: number;
  readonly phases: readonly EventLoopPhase[];
  /** process.resourceUsage() at exit: CPU times in milliseconds, peak RSS in kilobytes. */
  readonly userCpuMs: number;
  readonly systemCpuMs: number;
  readonly maxRssKb: number;
  readonly exitCode: number;
}

interface Monitor {
  readonly start: number;
  /** Undefined when the monitors are off. */
  readonly histogram: IntervalHistogram | undefined;
  readonly phases: EventLoopPhase[];
  phaseName: string;
  phaseStart: number;
  gapMaxMs: number;
  gapMaxSched: Schedstat | undefined;
  lastTick: number;
  lastSched: Schedstat | undefined;
  phaseCpu: NodeJS.CpuUsage;
}

/** Nanoseconds the calling thread has run on a CPU and waited runnable for one. */
interface Schedstat {
  readonly runNs: number;
  readonly waitNs: number;
}

/**
 * The main thread's schedstat file, opened once and read again from offset 0 on every tick.
 * Reading it with readFileSync (open, stat, read, close) 200 times a second added CPU time of its
 * own to the figures that this report measures.
 */
let schedstatFd: number | undefined;
const schedstatBuffer = Buffer.alloc(128);

function readSchedstat(): Schedstat | undefined {
  try {
    schedstatFd ??= fs.openSync('/proc/thread-self/schedstat', 'r');
    const length = fs.readSync(schedstatFd, schedstatBuffer, 0, schedstatBuffer.length, 0);
    const [run, wait] = schedstatBuffer.toString('latin1', 0, length).split(' ').map(Number);
    return run !== undefined && wait !== undefined && Number.isFinite(run) && Number.isFinite(wait) ? { runNs: run, waitNs: wait } : undefined;
  } catch {
    return undefined;
  }
}

/** Records the gap from the last tick to `now` when it is the longest of the phase. */
function recordGap(current: Monitor, now: number): void {
  const gapMs = now - current.lastTick - RESOLUTION_MS;
  const sched = readSchedstat();
  if (gapMs > current.gapMaxMs) {
    current.gapMaxMs = gapMs;
    current.gapMaxSched =
      sched !== undefined && current.lastSched !== undefined ? { runNs: sched.runNs - current.lastSched.runNs, waitNs: sched.waitNs - current.lastSched.waitNs } : undefined;
  }
  current.lastTick = now;
  current.lastSched = sched;
}

function cpuMsSince(previous: NodeJS.CpuUsage): number {
  const used = process.cpuUsage(previous);
  return (used.user + used.system) / 1000;
}

let monitor: Monitor | undefined;

function closePhase(current: Monitor, now: number): void {
  // A block that lasts until now has not reached the next callback yet, so it is counted here.
  if (current.histogram !== undefined) recordGap(current, now);
  const gapMs = Math.max(current.gapMaxMs, 0);
  const sched = current.gapMaxSched;
  const histogram = current.histogram;
  const sampled = histogram !== undefined && histogram.count > 0;
  current.phases.push({
    name: current.phaseName,
    startMs: current.phaseStart - current.start,
    endMs: now - current.start,
    delayMaxMs: sampled ? histogram.max / 1e6 : 0,
    delayP99Ms: sampled ? histogram.percentile(99) / 1e6 : 0,
    intervalGapMaxMs: gapMs,
    ...(sched !== undefined ? { intervalGapMaxRunMs: sched.runNs / 1e6, intervalGapMaxWaitMs: sched.waitNs / 1e6 } : {}),
    cpuMs: cpuMsSince(current.phaseCpu),
  });
  histogram?.reset();
  current.gapMaxMs = 0;
  current.gapMaxSched = undefined;
  current.phaseCpu = process.cpuUsage();
}

/** Ends the current phase and starts one named `name`; does nothing unless the report is on. */
export function markEventLoopPhase(name: string): void {
  if (monitor === undefined) return;
  const now = performance.now();
  closePhase(monitor, now);
  monitor.phaseName = name;
  monitor.phaseStart = now;
}

/**
 * Starts the report when the environment variable names a file, with both monitors unless
 * KUBETRUST_EVENT_LOOP_MONITORS is `off`, and writes the report at exit. Only the first call in a
 * process starts it.
 */
export function startEventLoopReport(env: NodeJS.ProcessEnv = process.env): void {
  const file = env[EVENT_LOOP_REPORT_ENV];
  if (file === undefined || file === '' || monitor !== undefined) return;

  const start = performance.now();
  const cpuAtStart = process.cpuUsage();
  const monitors = env[EVENT_LOOP_MONITORS_ENV] !== 'off';
  const histogram = monitors ? monitorEventLoopDelay({ resolution: RESOLUTION_MS }) : undefined;
  histogram?.enable();
  const current: Monitor = {
    start,
    histogram,
    phases: [],
    phaseName: 'startup',
    phaseStart: start,
    gapMaxMs: 0,
    gapMaxSched: undefined,
    lastTick: start,
    lastSched: monitors ? readSchedstat() : undefined,
    phaseCpu: cpuAtStart,
  };
  monitor = current;
  const interval = monitors ? setInterval(() => recordGap(current, performance.now()), RESOLUTION_MS) : undefined;
  interval?.unref();

  process.once('exit', (code) => {
    clearInterval(interval);
    const now = performance.now();
    closePhase(current, now);
    histogram?.disable();
    const usage = process.resourceUsage();
    const report: EventLoopReport = {
      argv: process.argv.slice(2),
      wallMs: now - start,
      resolutionMs: RESOLUTION_MS,
      monitors,
      cpuBeforeMs: (cpuAtStart.user + cpuAtStart.system) / 1000,
      delayMaxMs: Math.max(...current.phases.map((phase) => phase.delayMaxMs)),
      intervalGapMaxMs: Math.max(...current.phases.map((phase) => phase.intervalGapMaxMs)),
      phases: current.phases,
      userCpuMs: usage.userCPUTime / 1000,
      systemCpuMs: usage.systemCPUTime / 1000,
      maxRssKb: usage.maxRSS,
      exitCode: code,
    };
    try {
      fs.writeFileSync(file, JSON.stringify(report, null, 2) + '\n');
    } catch (error) {
      process.stderr.write(`warning: ${EVENT_LOOP_REPORT_ENV}: writing ${file} failed: ${(error as Error).message}\n`);
    }
  });
}
