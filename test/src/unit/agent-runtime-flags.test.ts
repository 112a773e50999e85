import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { RUNTIME_FLAGS } from '@kubetrust/agent/dist/runtime-flags';
import { AGENT_CLI } from '../harness/local-cluster';

const run = promisify(execFile);
const RUNTIME_FLAGS_MODULE = require.resolve('@kubetrust/agent/dist/runtime-flags');

/**
 * Builds a script that optionally applies the agent's runtime flags, allocates about 200 MB of short-lived
 * objects and prints the new space's committed size in bytes.
 */
function newSpaceScript(apply: boolean): string {
  return [
    apply ? `require(${JSON.stringify(RUNTIME_FLAGS_MODULE)}).applyRuntimeFlags();` : '',
    'let keep = [];',
    "for (let i = 0; i < 2e6; i++) { keep.push({ a: i, b: 'x' + i }); if (keep.length > 1000) keep = []; }",
    "const space = require('node:v8').getHeapSpaceStatistics().find((s) => s.space_name === 'new_space');",
    'process.stdout.write(String(space.space_size));',
  ].join('\n');
}

async function newSpaceBytes(apply: boolean): Promise<number> {
  const { stdout } = await run(process.execPath, ['-e', newSpaceScript(apply)]);
  return Number(stdout);
}

describe('agent runtime flags', () => {
  it('keep the new space small', async () => {
    const without = await newSpaceBytes(false);
    const withFlags = await newSpaceBytes(true);
    assert.ok(without > 8 * 1024 * 1024, `without the flags the new space grew only to ${without} bytes, so this check shows nothing`);
    assert.ok(withFlags <= 4 * 1024 * 1024, `with the flags the new space grew to ${withFlags} bytes, expected at most 4 MB`);
  });

  it('are all accepted by V8', async () => {
    const script = `const v8 = require('node:v8'); for (const flag of ${JSON.stringify(RUNTIME_FLAGS)}) v8.setFlagsFromString(flag); process.stdout.write('ok');`;
    const { stdout, stderr } = await run(process.execPath, ['-e', script]);
    assert.equal(stdout, 'ok');
    assert.equal(stderr, '', `V8 printed a warning for one of ${RUNTIME_FLAGS.join(' ')}`);
  });

  it('are applied by the agent launcher', async () => {
    const { stdout } = await run(process.execPath, [AGENT_CLI, '--version']);
    assert.match(stdout, /\d+\.\d+\.\d+/);
    const launcher = await import('node:fs').then((fs) => fs.readFileSync(AGENT_CLI, 'utf8'));
    const applyAt = launcher.indexOf('applyRuntimeFlags()');
    const cliAt = launcher.indexOf(path.join('..', 'dist', 'cli.js'));
    assert.ok(applyAt >= 0, 'agent/bin/agent.js does not call applyRuntimeFlags()');
    assert.ok(applyAt < cliAt, 'agent/bin/agent.js loads the CLI before it applies the runtime flags');
  });
});
