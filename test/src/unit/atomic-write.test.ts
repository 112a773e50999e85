/**
 * writeFileAtomic: the file and its directory are synced by default, and neither when the caller
 * asks for a write that is only atomic.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { writeFileAtomic } from '@kubetrust/shared/dist/files';
import { countFsyncs } from '../harness/fsync-counter';

describe('atomic write', () => {
  let dir: string;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-atomic-write-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('syncs file and directory by default', async () => {
    const target = path.join(dir, 'ledger.json');
    const syncs = await countFsyncs(() => writeFileAtomic(target, '{"issued": []}\n', { mode: 0o600 }));
    assert.equal(syncs, 2);
    assert.equal(fs.readFileSync(target, 'utf8'), '{"issued": []}\n');
    assert.equal(fs.statSync(target).mode & 0o777, 0o600);
  });

  it('skips syncs when not durable', async () => {
    const target = path.join(dir, 'rollout.json');
    fs.writeFileSync(target, 'old\n');
    const syncs = await countFsyncs(() => writeFileAtomic(target, 'new\n', { mode: 0o644, durable: false }));
    assert.equal(syncs, 0);
    assert.equal(fs.readFileSync(target, 'utf8'), 'new\n');
    assert.equal(fs.statSync(target).mode & 0o777, 0o644);
    assert.deepEqual(fs.readdirSync(dir), ['rollout.json'], 'a temporary file was left behind');
  });
});
