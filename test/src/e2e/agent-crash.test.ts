/**
 * Crash safety of the agent's install: a child process installs a change set of 20 files through
 * the real Installer and is killed with SIGKILL after a random delay. After the agent's start-up
 * recovery every file must be from the same generation, all old or all new. Delays come from a
 * seeded generator, and a failure names the seed so the trial can be repeated.
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Installer } from '@kubetrust/agent/dist/install';
import { StagedKeys } from '@kubetrust/agent/dist/staged-keys';
import { silentLogger } from '@kubetrust/shared/dist/log';
import { crashTestPaths } from '../harness/install-child';
import { seededRandom } from '../harness/seeded-random';

const CHILD = path.join(__dirname, '..', 'harness', 'install-child.js');
const FILES = 20;
const TRIALS = 60;

function runChild(root: string, stateDir: string, generation: number, killAfterMs: number): Promise<'killed' | 'finished'> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, root, stateDir, String(generation), String(FILES)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (signal === 'SIGKILL') resolve('killed');
      else if (code === 0) resolve('finished');
      else reject(new Error(`install child exited with ${code}: ${stderr}`));
    });
  });
}

function generations(root: string): Set<string> {
  return new Set(crashTestPaths(FILES).map((file) => fs.readFileSync(path.join(root, file), 'utf8')));
}

describe('agent install under SIGKILL', function () {
  this.timeout(300_000);
  let dir: string;

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-crash-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('leaves all files old or all new', async () => {
    const root = path.join(dir, 'root');
    const stateDir = path.join(dir, 'state');
    assert.equal(await runChild(root, stateDir, 0, 60_000), 'finished');
    const outcomes = { killed: 0, finished: 0, old: 0, new: 0 };
    for (let trial = 1; trial <= TRIALS; trial++) {
      const seed = 1000 + trial;
      const killAfterMs = Math.floor(seededRandom(seed)() * 400);
      outcomes[await runChild(root, stateDir, trial, killAfterMs)]++;
      await new Installer(root, stateDir, new StagedKeys(stateDir), silentLogger()).recoverInterruptedChange();
      const found = generations(root);
      assert.equal(found.size, 1, `seed ${seed} (kill after ${killAfterMs} ms) left a mix: ${[...found].join(' / ').replace(/\n/g, '')}`);
      const content = [...found][0]!;
      // A trial that ends old is re-run as the next generation, so track the current one.
      if (content === `generation ${trial}\n`) outcomes.new++;
      else {
        outcomes.old++;
        assert.equal(await runChild(root, stateDir, trial, 60_000), 'finished');
      }
      const leftovers = fs.readdirSync(path.join(root, 'etc/kubernetes/pki')).filter((name) => name.includes('.tmp-'));
      if (leftovers.length > 0) fs.rmSync(path.join(root, 'etc/kubernetes/pki', leftovers[0]!), { force: true });
    }
    // Both outcomes must occur, or the kill points did not cover the install.
    assert.ok(outcomes.killed > 0, JSON.stringify(outcomes));
    assert.ok(outcomes.old > 0, `no kill point came before the renames: ${JSON.stringify(outcomes)}`);
    assert.ok(outcomes.new > 0, `no kill point came after the journal: ${JSON.stringify(outcomes)}`);
  });
});
