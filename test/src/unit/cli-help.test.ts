/**
 * The controller's help marks the options a command cannot run without, and both command lines
 * name a misspelled option as unknown before they report a required option as missing.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { AGENT_CLI, runController, runNode } from '../harness/local-cluster';

/** Returns the help line of one option, found by its flags. */
function optionLine(help: string, flags: string): string {
  const line = help.split('\n').find((candidate) => candidate.trimStart().startsWith(flags));
  assert.ok(line !== undefined, `no line for ${flags} in:\n${help}`);
  return line;
}

describe('controller help', function () {
  this.timeout(30_000);

  it('marks required distribute options', async () => {
    const result = await runController(['distribute', '--help']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(optionLine(result.stdout, '-i, --inventory'), /\(required\)$/);
    assert.match(optionLine(result.stdout, '-s, --state-dir'), /\(required\)$/);
    assert.doesNotMatch(optionLine(result.stdout, '--dry-run'), /\(required\)/);
  });

  it('lists every plan mode', async () => {
    const result = await runController(['--help']);
    assert.equal(result.code, 0, result.stderr);
    // Commander wraps a long description onto indented lines below the command's name.
    const lines = result.stdout.split('\n');
    const start = lines.findIndex((line) => line.trimStart().startsWith('plan '));
    assert.ok(start >= 0, result.stdout);
    let end = start + 1;
    while (end < lines.length && /^\s{6,}\S/.test(lines[end]!) && !/^\s{2}\S/.test(lines[end]!)) end++;
    const summary = lines.slice(start, end).join(' ');
    assert.match(summary, /--dry-run/);
    assert.match(summary, /--flags/);
    assert.match(summary, /--bindings/);
  });

  it('marks nested command options once', async () => {
    const result = await runController(['ca', 'rotate', '--help']);
    assert.equal(result.code, 0, result.stderr);
    const marked = result.stdout.split('\n').filter((line) => line.includes('(required)'));
    assert.ok(marked.length > 0, result.stdout);
    for (const line of marked) assert.equal(line.split('(required)').length, 2, line);
  });
});

describe('command-line option errors', function () {
  this.timeout(30_000);

  let dir: string;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-cli-options-'));
  });

  afterEach(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('names a misspelled option as unknown', async () => {
    const out = path.join(dir, 'out');
    const result = await runController(['issue', '--inventory', path.join(dir, 'cluster.yaml'), '--state-dri', path.join(dir, 'state'), '--out', out]);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /unknown option '--state-dri'/);
    assert.match(result.stderr, /Did you mean --state-dir\?/);
    assert.doesNotMatch(result.stderr, /required option/);
    assert.equal(fs.existsSync(out), false, 'the command wrote its output directory');
  });

  it('reports a missing required option', async () => {
    const out = path.join(dir, 'out');
    const result = await runController(['issue', '--inventory', path.join(dir, 'cluster.yaml'), '--out', out]);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /required option '-s, --state-dir <dir>' not specified/);
    assert.equal(fs.existsSync(out), false, 'the command wrote its output directory');
  });

  it('checks nested command options', async () => {
    const result = await runController(['ca', 'rotate', '--inventory', path.join(dir, 'cluster.yaml'), '--state-dir', path.join(dir, 'state'), '--ca', 'cluster-ca']);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /required option '--phase <phase>' not specified/);
  });

  it('names an unknown agent option first', async () => {
    const configDir = path.join(dir, 'agent');
    const result = await runNode(AGENT_CLI, ['enroll-request', '--config-dri', configDir, '--node', 'worker-1', '--cluster', 'demo', '--host', '127.0.0.1']);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /unknown option '--config-dri'/);
    assert.match(result.stderr, /Did you mean --config-dir\?/);
    assert.equal(fs.existsSync(configDir), false, 'the agent wrote its configuration directory');
  });

  it('reports a missing agent option', async () => {
    const result = await runNode(AGENT_CLI, ['enroll-request', '--node', 'worker-1', '--cluster', 'demo', '--host', '127.0.0.1']);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /required option '--config-dir <dir>' not specified/);
  });
});
