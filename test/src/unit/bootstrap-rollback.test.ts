import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { agentInstallPaths } from '@kubetrust/controller/dist/agent-install';
import { chooseAction, detectScript, parseDetect } from '@kubetrust/controller/dist/bootstrap';
import {
  dropCopiesCommand,
  failureMessage,
  keepCopyCommand,
  planRollback,
  previousCopy,
  restoreCommand,
  rollbackLeftover,
  rollbackNote,
  serviceFileCopyCommand,
  upgradedFiles,
} from '@kubetrust/controller/dist/bootstrap-rollback';

/** Detection output with the sections that matter for an upgrade. */
function output(version: string, previous: string | undefined): string {
  return [
    '--kubetrust--os', 'Linux',
    '--kubetrust--arch', 'x86_64',
    '--kubetrust--init', 'fallback',
    '--kubetrust--version', version,
    ...(previous !== undefined ? ['--kubetrust--previous', previous] : []),
    '--kubetrust--config', 'present',
    '--kubetrust--identity', '',
    '',
  ].join('\n');
}

/** Runs a command the way a node's POSIX shell would and returns its standard output. */
function sh(command: string, cwd: string): string {
  return execFileSync('sh', ['-c', command], { cwd, encoding: 'utf8', stdio: 'pipe' });
}

describe('bootstrap upgrade rollback decisions', () => {
  const paths = agentInstallPaths('/srv/node-1');

  it('detects the rollback copy version', () => {
    assert.match(detectScript(paths), /'\/srv\/node-1\/usr\/local\/bin\/kubetrust-agent\.previous' --version/);
    assert.equal(parseDetect(output('0.1.0', 'kubetrust-agent 0.0.9')).previousVersion, '0.0.9');
    assert.equal(parseDetect(output('0.1.0', 'absent')).previousVersion, undefined);
    assert.equal(parseDetect(output('0.1.0', undefined)).previousVersion, undefined);
  });

  it('resumes an unconfirmed upgrade', () => {
    const resumed = chooseAction(parseDetect(output('0.1.0', '0.0.9')), '0.1.0', undefined);
    assert.deepEqual(resumed, { action: 'upgrade', reasons: ['the upgrade from agent 0.0.9 to 0.1.0 was not confirmed'] });
    const newer = chooseAction(parseDetect(output('0.1.0', '0.0.9')), '0.2.0', undefined);
    assert.deepEqual(newer, { action: 'upgrade', reasons: ['agent 0.1.0 installed, 0.2.0 available'] });
    assert.equal(chooseAction(parseDetect(output('0.1.0', 'unreadable')), '0.1.0', undefined).action, 'start');
    assert.equal(chooseAction(parseDetect(output('0.1.0', undefined)), '0.1.0', undefined).action, 'start');
  });

  it('chooses the rollback target', () => {
    const cases: { installed: string | undefined; previous: string | undefined; expected: ReturnType<typeof planRollback> }[] = [
      { installed: '0.0.9', previous: undefined, expected: { version: '0.0.9', keepExisting: false } },
      { installed: '0.1.0', previous: '0.0.9', expected: { version: '0.0.9', keepExisting: true } },
      { installed: '0.0.9', previous: 'unreadable', expected: { version: '0.0.9', keepExisting: false } },
      { installed: 'unreadable', previous: undefined, expected: undefined },
      { installed: 'unreadable', previous: 'unreadable', expected: undefined },
      { installed: undefined, previous: undefined, expected: undefined },
    ];
    for (const { installed, previous, expected } of cases) {
      assert.deepEqual(planRollback(installed, previous), expected, `installed ${String(installed)}, copy ${String(previous)}`);
    }
  });

  it('notes the kept rollback copy', () => {
    const binary = paths.binary;
    assert.equal(rollbackNote({ version: '0.0.9', keepExisting: false }, binary, '0.1.0'), `keeps agent 0.0.9 as ${binary}.previous and rolls back to it unless agent 0.1.0 responds`);
    assert.match(rollbackNote({ version: '0.0.9', keepExisting: true }, binary, '0.1.0'), /left by an upgrade that was not confirmed/);
    assert.match(rollbackNote(undefined, binary, '0.1.0'), /^no rollback copy: .*does not report its version/);
  });

  it('lists upgraded files per init system', () => {
    assert.deepEqual(upgradedFiles(paths, 'systemd'), [paths.binary, '/etc/systemd/system/kubetrust-agent.service']);
    assert.deepEqual(upgradedFiles(paths, 'fallback'), [paths.binary, '/srv/node-1/usr/local/sbin/kubetrust-agent-ctl']);
  });

  it('copies changed service files only', () => {
    const file = '/etc/systemd/system/kubetrust-agent.service';
    assert.equal(serviceFileCopyCommand(file, 'aa', 'bb', false), keepCopyCommand(file, false));
    assert.equal(serviceFileCopyCommand(file, 'aa', 'bb', true), keepCopyCommand(file, true));
    assert.equal(serviceFileCopyCommand(file, 'bb', 'bb', true), undefined);
    assert.equal(serviceFileCopyCommand(file, 'bb', 'bb', false), `rm -f '${file}.previous'`);
    assert.equal(serviceFileCopyCommand(file, undefined, 'bb', false), `rm -f '${file}.previous'`);
    assert.equal(serviceFileCopyCommand(file, undefined, 'bb', true), undefined);
  });

  it('builds rollback failure messages', () => {
    assert.equal(failureMessage('starting the agent failed (exit 1)', '0.2.0', undefined), 'starting the agent failed (exit 1)');
    const done = failureMessage('starting the agent failed (exit 1)', '0.2.0', { status: 'done', version: '0.0.9', restored: [paths.binary] });
    assert.equal(done, 'the upgrade to agent 0.2.0 failed: starting the agent failed (exit 1). Rolled back to agent 0.0.9, which responds over mutual TLS again');
    const failed = failureMessage('x', '0.2.0', { status: 'failed', version: '0.0.9', restored: [], error: 'restarting the agent failed' });
    assert.equal(failed, 'the upgrade to agent 0.2.0 failed: x. The rollback to agent 0.0.9 failed too: restarting the agent failed');
    assert.doesNotMatch(done, /\n/);
  });

  it('describes leftovers per rollback stage', () => {
    const context = { node: 'worker-1', paths, init: 'fallback' as const, unitName: 'kubetrust-agent.service', previousVersion: '0.0.9', newVersion: '0.2.0' };
    const restore = rollbackLeftover('restore', context);
    assert.match(restore, /agent 0\.2\.0 at \/srv\/node-1\/usr\/local\/bin\/kubetrust-agent and agent 0\.0\.9 at \/srv\/node-1\/usr\/local\/bin\/kubetrust-agent\.previous/);
    assert.match(restore, /`mv -f \/srv\/node-1\/usr\/local\/bin\/kubetrust-agent\.previous \/srv\/node-1\/usr\/local\/bin\/kubetrust-agent`/);
    assert.match(restore, /`controller bootstrap --nodes worker-1`/);
    const start = rollbackLeftover('start', context);
    assert.match(start, /agent 0\.0\.9 is back .* but does not run/);
    assert.match(start, /`\/srv\/node-1\/usr\/local\/sbin\/kubetrust-agent-ctl start`/);
    assert.match(start, /\/srv\/node-1\/var\/log\/kubetrust-agent\.log/);
    const confirm = rollbackLeftover('confirm', { ...context, init: 'systemd' });
    assert.match(confirm, /did not respond as worker-1 with version 0\.0\.9/);
    assert.match(confirm, /`journalctl -u kubetrust-agent\.service`/);
    for (const text of [restore, start, confirm]) assert.doesNotMatch(text, /\n/);
  });
});

describe('bootstrap rollback shell commands', () => {
  let dir: string;
  let file: string;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-rollback-'));
    file = path.join(dir, 'kubetrust-agent');
    fs.writeFileSync(file, 'agent 0.0.9\n', { mode: 0o755 });
  });

  afterEach(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  function read(name: string): string {
    return fs.readFileSync(path.join(dir, name), 'utf8');
  }

  it('keeps the replaced file', () => {
    fs.writeFileSync(`${file}.upload`, 'agent 0.1.0\n', { mode: 0o755 });
    sh(`${keepCopyCommand(file, false)} && mv -f ${file}.upload ${file}`, dir);
    assert.equal(read('kubetrust-agent'), 'agent 0.1.0\n');
    assert.equal(read('kubetrust-agent.previous'), 'agent 0.0.9\n');
    assert.equal(fs.statSync(previousCopy(file)).mode & 0o777, 0o755);
    assert.deepEqual(fs.readdirSync(dir).sort(), ['kubetrust-agent', 'kubetrust-agent.previous']);
  });

  it('replaces a stale copy unless kept', () => {
    fs.writeFileSync(previousCopy(file), 'agent 0.0.5\n');
    sh(keepCopyCommand(file, true), dir);
    assert.equal(read('kubetrust-agent.previous'), 'agent 0.0.5\n');
    sh(keepCopyCommand(file, false), dir);
    assert.equal(read('kubetrust-agent.previous'), 'agent 0.0.9\n');
  });

  it('fails cleanly on a missing file', () => {
    fs.rmSync(file);
    assert.throws(() => sh(keepCopyCommand(file, false), dir), /cannot stat/);
    assert.deepEqual(fs.readdirSync(dir), []);
  });

  it('restores copies and lists them', () => {
    const script = path.join(dir, 'kubetrust-agent-ctl');
    fs.writeFileSync(script, 'new script\n');
    fs.writeFileSync(previousCopy(file), 'agent 0.0.5\n');
    const printed = sh(restoreCommand([file, script]), dir);
    assert.deepEqual(printed.trim().split('\n'), [file]);
    assert.equal(read('kubetrust-agent'), 'agent 0.0.5\n');
    assert.equal(read('kubetrust-agent-ctl'), 'new script\n');
    assert.equal(fs.existsSync(previousCopy(file)), false);
  });

  it('drops copies and temporary files', () => {
    fs.writeFileSync(previousCopy(file), 'agent 0.0.5\n');
    fs.writeFileSync(`${previousCopy(file)}.tmp`, 'partial\n');
    sh(dropCopiesCommand([file, path.join(dir, 'kubetrust-agent-ctl')]), dir);
    assert.deepEqual(fs.readdirSync(dir), ['kubetrust-agent']);
  });
});
