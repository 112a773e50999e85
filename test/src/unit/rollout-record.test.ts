/**
 * rollout.json in the state directory: the record of a rollout in progress, whose writes are
 * merged so that a rollout of many nodes does not write once per node.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { StateDir, type RolloutRecord } from '@kubetrust/controller';
import { renderDistribute } from '@kubetrust/controller/dist/report';
import { countFsyncs } from '../harness/fsync-counter';

describe('rollout record', () => {
  let dir: string;
  let state: StateDir;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-rollout-record-'));
    state = new StateDir(dir);
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('writes the latest record and removes it', async () => {
    const record = (finished: Record<string, string>): RolloutRecord => ({ startedAt: '2030-01-02T03:04:05.000Z', total: 3, finished });
    assert.equal(await state.readRollout(), undefined);
    await state.writeRollout(record({}));
    assert.deepEqual(await state.readRollout(), record({}));
    // Calls made while a write runs end up in one later write with the last record.
    const writes = [state.writeRollout(record({ 'etcd-1': 'changed' })), state.writeRollout(record({ 'etcd-1': 'changed', 'master-1': 'changed' }))];
    await Promise.all(writes);
    assert.deepEqual(await state.readRollout(), record({ 'etcd-1': 'changed', 'master-1': 'changed' }));
    await state.writeRollout(undefined);
    assert.equal(await state.readRollout(), undefined);
    assert.deepEqual(fs.readdirSync(dir), []);
  });

  it('syncs first record, not progress', async () => {
    const record = (finished: Record<string, string>): RolloutRecord => ({ startedAt: '2030-01-02T03:04:05.000Z', total: 2, finished });
    assert.equal(await countFsyncs(() => state.writeRollout(record({}))), 2, 'the first record is not synced');
    assert.equal(await countFsyncs(() => state.writeRollout(record({ 'etcd-1': 'changed' }), true)), 0, 'a progress update is synced');
    assert.deepEqual(await state.readRollout(), record({ 'etcd-1': 'changed' }));
    // A progress update merged with a record that must be durable is written durably.
    const merged = countFsyncs(() => Promise.all([state.writeRollout(record({ 'etcd-1': 'changed', 'etcd-2': 'changed' }), true), state.writeRollout(record({ 'etcd-1': 'changed', 'etcd-2': 'failed' }))]));
    assert.equal(await merged, 2);
    assert.deepEqual(await state.readRollout(), record({ 'etcd-1': 'changed', 'etcd-2': 'failed' }));
  });

  it('names an interrupted rollout in the report', () => {
    const text = renderDistribute({ cluster: 'unit', dryRun: false, nodes: [], interrupted: { startedAt: '2030-01-02T03:04:05.000Z', finished: 2, total: 5 } });
    assert.match(text, /The rollout started at 2030-01-02T03:04:05\.000Z stopped after 2 of 5 nodes; this run starts again from what the nodes hold\./);
  });
});
