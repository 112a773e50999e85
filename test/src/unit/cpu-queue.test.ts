import { strict as assert } from 'node:assert';
import { CpuQueue } from '@kubetrust/controller/dist/cpu-queue';

describe('CpuQueue', () => {
  it('runs jobs in the order they were queued and resolves with their results', async () => {
    const queue = new CpuQueue();
    const order: number[] = [];
    const results = await Promise.all([1, 2, 3, 4].map((value) => queue.run(() => (order.push(value), value * 10))));
    assert.deepEqual(order, [1, 2, 3, 4]);
    assert.deepEqual(results, [10, 20, 30, 40]);
  });

  it('rejects a throwing job, runs later ones', async () => {
    const queue = new CpuQueue();
    const failing = queue.run(() => {
      throw new Error('bad CSR');
    });
    const next = queue.run(() => 'signed');
    await assert.rejects(failing, /bad CSR/);
    assert.equal(await next, 'signed');
  });

  it('runs no job in the turn that queued it', async () => {
    const queue = new CpuQueue();
    let ran = false;
    const done = queue.run(() => {
      ran = true;
    });
    assert.equal(ran, false);
    await done;
    assert.equal(ran, true);
  });

  it('lets callbacks scheduled in between run before the next job', async () => {
    const queue = new CpuQueue();
    const events: string[] = [];
    const first = queue.run(() => {
      events.push('job 1');
      // An I/O or timer callback that becomes ready while job 1 runs.
      setImmediate(() => events.push('callback'));
    });
    const second = queue.run(() => events.push('job 2'));
    await Promise.all([first, second]);
    assert.deepEqual(events, ['job 1', 'callback', 'job 2']);
  });

  it('gives turn() a turn of its own after the jobs queued before it', async () => {
    const queue = new CpuQueue();
    const events: string[] = [];
    const job = queue.run(() => events.push('job'));
    const turn = queue.turn().then(() => events.push('turn'));
    await Promise.all([job, turn]);
    assert.deepEqual(events, ['job', 'turn']);
  });
});
