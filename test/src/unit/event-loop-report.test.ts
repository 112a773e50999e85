/**
 * The controller's opt-in event-loop report: with its two monitors it records how long the event
 * loop was blocked, and with KUBETRUST_EVENT_LOOP_MONITORS=off it records the CPU times alone.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { EVENT_LOOP_MONITORS_ENV, EVENT_LOOP_REPORT_ENV, type EventLoopReport } from '@kubetrust/controller/dist/event-loop-report';

const REPORT_MODULE = require.resolve('@kubetrust/controller/dist/event-loop-report');

/** Runs a process that starts the report, then keeps its event loop busy for 120 ms of CPU in a phase named `work`. */
function reportOf(env: Record<string, string>): EventLoopReport {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-event-loop-report-'));
  try {
    const file = path.join(dir, 'report.json');
    const script = [
      `const report = require(${JSON.stringify(REPORT_MODULE)});`,
      'report.startEventLoopReport();',
      'setTimeout(() => {',
      "  report.markEventLoopPhase('work');",
      '  const started = process.cpuUsage();',
      '  while (true) { const used = process.cpuUsage(started); if (used.user + used.system > 120000) break; }',
      '}, 30);',
    ].join('\n');
    const result = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, ...env, [EVENT_LOOP_REPORT_ENV]: file }, encoding: 'utf8' });
    assert.equal(result.status, 0, result.stderr);
    return JSON.parse(fs.readFileSync(file, 'utf8')) as EventLoopReport;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe('event-loop report', () => {
  it('measures a blocked loop with monitors', () => {
    const report = reportOf({});
    assert.equal(report.monitors, true);
    assert.deepEqual(report.phases.map((phase) => phase.name), ['startup', 'work']);
    const work = report.phases[1]!;
    assert.ok(work.cpuMs >= 120, `the work phase used ${work.cpuMs} ms of CPU`);
    assert.ok(work.intervalGapMaxMs >= 100, `the longest gap was ${work.intervalGapMaxMs} ms for a 120 ms block`);
    assert.ok(report.userCpuMs + report.systemCpuMs >= 120);
  });

  it('measures CPU alone without monitors', () => {
    const report = reportOf({ [EVENT_LOOP_MONITORS_ENV]: 'off' });
    assert.equal(report.monitors, false);
    assert.deepEqual(report.phases.map((phase) => phase.name), ['startup', 'work']);
    const work = report.phases[1]!;
    assert.ok(work.cpuMs >= 120, `the work phase used ${work.cpuMs} ms of CPU`);
    assert.equal(work.delayMaxMs, 0);
    assert.equal(work.intervalGapMaxMs, 0);
    assert.equal(work.intervalGapMaxRunMs, undefined);
    assert.equal(report.delayMaxMs, 0);
  });
});
