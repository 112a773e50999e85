/**
 * The controller's help marks the options a command cannot run without.
 */
import { strict as assert } from 'node:assert';
import { runController } from '../harness/local-cluster';

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

  it('marks nested command options once', async () => {
    const result = await runController(['ca', 'rotate', '--help']);
    assert.equal(result.code, 0, result.stderr);
    const marked = result.stdout.split('\n').filter((line) => line.includes('(required)'));
    assert.ok(marked.length > 0, result.stdout);
    for (const line of marked) assert.equal(line.split('(required)').length, 2, line);
  });
});
