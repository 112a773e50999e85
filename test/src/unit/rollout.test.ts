import { strict as assert } from 'node:assert';
import { DEFAULT_MAX_CLOCK_SKEW_MS, checkClockSkew, type NodePlan, type NodeReport } from '@kubetrust/controller';
import { obsoletePaths } from '@kubetrust/controller/dist/distribute';
import { LiveProgress } from '@kubetrust/controller/dist/progress';
import { renderDistribute } from '@kubetrust/controller/dist/report';
import { defaultMaxParallel, phaseOf, rollOut, rolloutPositions } from '@kubetrust/controller/dist/rollout';
import { itemPaths, itemsForNode, kubeletBootstrapFiles } from '@kubetrust/shared/dist/catalogue';
import { parseInventory, type Role, type SshSettings } from '@kubetrust/shared/dist/inventory';

const SSH_SETTINGS: SshSettings = {
  host: '192.0.2.1',
  port: 22,
  user: 'root',
  privateKeyFile: undefined,
  passphraseEnv: undefined,
  agent: false,
  agentSocket: undefined,
  jumpHost: undefined,
  sudo: false,
  knownHostsFile: '/root/.ssh/known_hosts',
  hostKeyFingerprint: undefined,
};

interface Call {
  readonly node: string;
  readonly started: number;
}

/** A plan for a node named `name`; `creating` marks an etcd member that has no etcd certificate yet. */
function plan(name: string, roles: Role[], options: { creating?: boolean; needsChange?: boolean } = {}): NodePlan {
  const etcdAction = options.creating === true ? 'add' : 'change';
  return {
    node: { name, addresses: ['192.0.2.1'], hostnames: [], roles, agent: { endpoint: '192.0.2.1:7443', host: '192.0.2.1', port: 7443, prefix: '/' }, ssh: SSH_SETTINGS, kubelet: { credentials: 'pre-provisioned' } },
    planned: [],
    plan: roles.includes('etcd') ? [{ name: 'etcd-server', action: etcdAction, paths: [], reasons: [], restarts: [] }] : [],
    pendingRestarts: [],
    removals: [],
    healthChecks: [],
    needsChange: options.needsChange ?? true,
  };
}

/** Steps that record the order of calls and fail the named nodes. */
function recorder(failing: readonly string[] = [], outcome: NodeReport['status'] = 'rolled-back') {
  const calls: Call[] = [];
  let clock = 0;
  let running = 0;
  let maxRunning = 0;
  const report = (name: string, status: NodeReport['status']): NodeReport => ({ name, status, changedFiles: [], restartedServices: [], plan: [], pendingRestarts: [], services: [] });
  return {
    calls,
    maxRunning: () => maxRunning,
    steps: {
      apply: async (nodePlan: NodePlan): Promise<NodeReport> => {
        calls.push({ node: nodePlan.node.name, started: clock++ });
        running++;
        maxRunning = Math.max(maxRunning, running);
        await new Promise((resolve) => setImmediate(resolve));
        running--;
        return report(nodePlan.node.name, failing.includes(nodePlan.node.name) ? outcome : 'changed');
      },
      skipped: (nodePlan: NodePlan, reason: string): NodeReport => ({ ...report(nodePlan.node.name, 'skipped'), error: reason }),
    },
  };
}

const CLUSTER = [
  plan('worker-1', ['worker']),
  plan('master-1', ['master']),
  plan('etcd-1', ['etcd']),
  plan('worker-2', ['worker']),
  plan('etcd-2', ['etcd']),
  plan('master-2', ['master', 'worker']),
  plan('etcd-3', ['etcd']),
];

describe('rollout order', () => {
  it('changes etcd, then masters, then workers', async () => {
    const run = recorder();
    const reports = await rollOut(CLUSTER, [], run.steps, { maxParallel: 1 });
    assert.deepEqual(run.calls.map((call) => call.node), ['etcd-1', 'etcd-2', 'etcd-3', 'master-1', 'master-2', 'worker-1', 'worker-2']);
    assert.ok(reports.every((report) => report.status === 'changed'));
  });

  it('changes one etcd member at a time', async () => {
    const run = recorder();
    await rollOut(CLUSTER.filter((entry) => entry.node.roles.includes('etcd')), [], run.steps);
    assert.equal(run.maxRunning(), 1);
  });

  it('starts a new etcd cluster all at once', async () => {
    const run = recorder();
    const creating = ['etcd-1', 'etcd-2', 'etcd-3'].map((name) => plan(name, ['etcd'], { creating: true }));
    await rollOut(creating, [], run.steps);
    assert.equal(run.maxRunning(), 3);
  });

  it('batches workers by max parallel', async () => {
    const run = recorder();
    const workers = Array.from({ length: 5 }, (_, index) => plan(`worker-${index}`, ['worker']));
    await rollOut(workers, [], run.steps, { maxParallel: 2 });
    assert.equal(run.maxRunning(), 2);
    assert.equal(run.calls.length, 5);
  });

  it('stops after a failed etcd member', async () => {
    const run = recorder(['etcd-2']);
    const reports = await rollOut(CLUSTER, [], run.steps, { maxParallel: 1 });
    assert.deepEqual(run.calls.map((call) => call.node), ['etcd-1', 'etcd-2']);
    const byName = new Map(reports.map((report) => [report.name, report]));
    assert.equal(byName.get('etcd-2')?.status, 'rolled-back');
    for (const name of ['etcd-3', 'master-1', 'master-2', 'worker-1', 'worker-2']) {
      assert.equal(byName.get(name)?.status, 'skipped', name);
      assert.match(byName.get(name)?.error ?? '', /stopped after etcd member etcd-2 failed/);
    }
  });

  it('keeps masters stopping even with continue on error', async () => {
    const run = recorder(['master-1'], 'failed');
    const reports = await rollOut(CLUSTER, [], run.steps, { maxParallel: 1, continueOnError: true });
    assert.deepEqual(run.calls.map((call) => call.node), ['etcd-1', 'etcd-2', 'etcd-3', 'master-1']);
    assert.equal(reports.find((report) => report.name === 'worker-2')?.status, 'skipped');
  });

  it('lets worker batches go on with continue on error', async () => {
    const run = recorder(['worker-1']);
    const reports = await rollOut(CLUSTER, [], run.steps, { maxParallel: 1, continueOnError: true });
    assert.ok(run.calls.some((call) => call.node === 'worker-2'));
    assert.equal(reports.find((report) => report.name === 'worker-2')?.status, 'changed');
  });

  it('touches no etcd member while one is unreachable', async () => {
    const run = recorder();
    const reports = await rollOut(CLUSTER.filter((entry) => entry.node.name !== 'etcd-3'), ['etcd-3'], run.steps);
    assert.deepEqual(run.calls, []);
    assert.match(reports.find((report) => report.name === 'etcd-1')?.error ?? '', /etcd member etcd-3 cannot be reached/);
  });

  it('leaves nodes without changes alone', async () => {
    const run = recorder();
    const reports = await rollOut([plan('worker-1', ['worker'], { needsChange: false }), plan('worker-2', ['worker'])], [], run.steps);
    assert.deepEqual(run.calls.map((call) => call.node), ['worker-2']);
    assert.deepEqual(reports.map((report) => report.name), ['worker-2']);
  });

  it('prefetches the next batch early', async () => {
    const events: string[] = [];
    const run = recorder(['m2']);
    const steps = {
      ...run.steps,
      prefetch: (nodePlan: NodePlan): void => {
        events.push(`prefetch ${nodePlan.node.name}`);
      },
      apply: async (nodePlan: NodePlan): Promise<NodeReport> => {
        events.push(`apply ${nodePlan.node.name}`);
        return run.steps.apply(nodePlan);
      },
    };
    const plans = [plan('e1', ['etcd']), plan('e2', ['etcd']), plan('m1', ['master']), plan('m2', ['master']), plan('m3', ['master']), plan('w1', ['worker'])];
    await rollOut(plans, [], steps, { maxParallel: 1 });
    const firstApply = (name: string): number => events.indexOf(`apply ${name}`);
    const firstPrefetch = (name: string): number => events.indexOf(`prefetch ${name}`);
    // Within a phase the next node, and across phases the first node of the next phase, are
    // prefetched before the node before them is applied.
    assert.ok(firstPrefetch('e2') < firstApply('e1'), events.join(', '));
    assert.ok(firstPrefetch('m1') < firstApply('e2'), events.join(', '));
    assert.ok(firstPrefetch('m2') < firstApply('m1'), events.join(', '));
    assert.ok(firstPrefetch('m3') < firstApply('m2'), events.join(', '));
    // m2 fails, so m3 is prefetched but never applied, and nothing after it is prefetched.
    assert.equal(firstApply('m3'), -1);
    assert.equal(firstPrefetch('w1'), -1);
  });

  it('puts each node in its most sensitive phase', () => {
    assert.equal(phaseOf(['worker', 'master', 'etcd']), 'etcd');
    assert.equal(phaseOf(['worker', 'master']), 'master');
    assert.equal(phaseOf(['worker']), 'worker');
    assert.equal(defaultMaxParallel(0), 1);
    assert.equal(defaultMaxParallel(25), 3);
  });
});

describe('rollout positions in a plan', () => {
  it('matches the order the rollout applies', async () => {
    const workers = Array.from({ length: 5 }, (_, index) => plan(`wk-${index + 1}`, ['worker']));
    const plans = [...CLUSTER, ...workers, plan('idle-1', ['worker'], { needsChange: false })];
    const positions = rolloutPositions(plans, 3);
    const rec = recorder();
    await rollOut(plans, [], rec.steps, { maxParallel: 3 });
    // The rollout applies exactly the positioned nodes, and never a node of a later step first.
    const steps = rec.calls.map((call) => positions.get(call.node)?.step);
    assert.deepEqual(rec.calls.map((call) => call.node).sort(), [...positions.keys()].sort());
    for (let index = 1; index < steps.length; index++) assert.ok(steps[index - 1]! <= steps[index]!, `call ${index} has step ${steps[index]} after step ${steps[index - 1]}`);
    assert.deepEqual(
      [...positions].map(([name, position]) => `${name} ${position.step} ${position.phase}`),
      [
        'etcd-1 1 etcd', 'etcd-2 2 etcd', 'etcd-3 3 etcd', 'master-1 4 master', 'master-2 5 master',
        'worker-1 6 worker', 'worker-2 6 worker', 'wk-1 6 worker', 'wk-2 7 worker', 'wk-3 7 worker', 'wk-4 7 worker', 'wk-5 8 worker',
      ],
    );
  });

  it('puts a new etcd cluster in one step', () => {
    const plans = [plan('etcd-1', ['etcd'], { creating: true }), plan('etcd-2', ['etcd'], { creating: true }), plan('master-1', ['master'])];
    assert.deepEqual([...rolloutPositions(plans).values()].map((position) => position.step), [1, 1, 2]);
  });

  it('lists a dry run in rollout order', () => {
    const report = (name: string, status: NodeReport['status'], rollout?: { step: number; phase: 'etcd' | 'master' | 'worker' }): NodeReport => ({
      name, status, changedFiles: [], restartedServices: [], plan: [], pendingRestarts: [], services: [], ...(rollout !== undefined ? { rollout } : {}),
    });
    const text = renderDistribute({
      cluster: 'unit',
      dryRun: true,
      nodes: [report('worker-1', 'planned', { step: 3, phase: 'worker' }), report('etcd-1', 'unchanged'), report('master-1', 'planned', { step: 2, phase: 'master' }), report('etcd-2', 'planned', { step: 1, phase: 'etcd' })],
    });
    const names = text.split('\n').filter((line) => /^  \S+: /.test(line)).map((line) => line.trim());
    assert.deepEqual(names, ['etcd-2: planned, step 1 (etcd)', 'master-1: planned, step 2 (master)', 'worker-1: planned, step 3 (worker)', 'etcd-1: unchanged']);
  });

  it('ends the report with a summary table', () => {
    const node = (name: string, status: NodeReport['status'], files: string[], restarted: string[], step?: number): NodeReport => ({
      name, status, changedFiles: files, restartedServices: restarted, plan: [], pendingRestarts: [], services: [], ...(step !== undefined ? { rollout: { step, phase: name.startsWith('etcd') ? 'etcd' : 'worker' } } : {}),
    });
    const text = renderDistribute({
      cluster: 'unit',
      dryRun: false,
      nodes: [node('worker-1', 'skipped', [], [], 2), node('etcd-1', 'changed', ['/a', '/b'], ['etcd'], 1), node('worker-2', 'unchanged', [], [])],
    });
    const table = text.split('\n\n')[1]!.split('\n').slice(0, 4);
    assert.deepEqual(table, [
      '  NODE      STATUS     STEP      FILES  RESTARTED',
      '  etcd-1    changed    1 etcd        2  etcd',
      '  worker-1  skipped    2 worker      0  -',
      '  worker-2  unchanged  -             0  -',
    ]);
  });

  it('shows the expiry and SAN changes of a new certificate', () => {
    const entry = {
      name: 'apiserver', action: 'change' as const, paths: [], reasons: ['SAN missing: api.unit.example'], restarts: [],
      current: { serialNumber: '0a', notAfter: '2027-01-01T00:00:00.000Z', dnsNames: ['kubernetes', 'old.unit.example'], ipAddresses: ['10.96.0.1'] },
      next: { dnsNames: ['api.unit.example', 'kubernetes'], ipAddresses: ['10.96.0.1'], notAfter: '2027-12-05T00:00:00.000Z' },
    };
    const text = renderDistribute({ cluster: 'unit', dryRun: true, nodes: [{ name: 'cp-1', status: 'planned', changedFiles: [], restartedServices: [], plan: [entry], pendingRestarts: [], services: [] }] });
    assert.match(text, /installed now: serial 0a, expires 2027-01-01T00:00:00\.000Z\n +new: expires 2027-12-05T00:00:00\.000Z, SANs added: api\.unit\.example, SANs removed: old\.unit\.example\n/);
  });
});

describe('clock skew preflight', () => {
  it('accepts a clock within the margin', () => {
    assert.doesNotThrow(() => checkClockSkew('wk-1', 1_000_000 + 119_000, 1_000_000, 120_000));
    assert.doesNotThrow(() => checkClockSkew('wk-1', 1_000_000 - 119_000, 1_000_000, 120_000));
  });

  it('rejects a node running behind', () => {
    assert.throws(() => checkClockSkew('wk-1', 1_000_000, 1_000_000 + 300_000, 120_000), /clock of node wk-1 is 300 s behind the controller's \(allowed: 120 s\); fix time synchronisation/);
  });

  it('rejects a node running ahead', () => {
    assert.throws(() => checkClockSkew('wk-1', 1_000_000 + 200_000, 1_000_000, 120_000), /200 s ahead of the controller's/);
  });

  it('allows two minutes by default', () => {
    const controllerMs = Date.UTC(2026, 0, 1);
    assert.doesNotThrow(() => checkClockSkew('wk-1', controllerMs - 60_000, controllerMs, DEFAULT_MAX_CLOCK_SKEW_MS), 'a node one minute behind');
    assert.doesNotThrow(() => checkClockSkew('wk-1', controllerMs + 60_000, controllerMs, DEFAULT_MAX_CLOCK_SKEW_MS), 'a node one minute ahead');
    assert.throws(() => checkClockSkew('wk-1', controllerMs - 180_000, controllerMs, DEFAULT_MAX_CLOCK_SKEW_MS), /is 180 s behind the controller's \(allowed: 120 s\)/);
    assert.throws(() => checkClockSkew('wk-1', controllerMs + 180_000, controllerMs, DEFAULT_MAX_CLOCK_SKEW_MS), /is 180 s ahead of the controller's \(allowed: 120 s\)/);
  });
});

describe('live progress line', () => {
  function fakeTerminal(columns: number): { stream: import('node:tty').WriteStream; output: () => string } {
    let written = '';
    const stream = { columns, write: (text: string) => ((written += text), true) } as unknown as import('node:tty').WriteStream;
    return { stream, output: () => written };
  }

  it('redraws one line with counts and the nodes in progress', () => {
    const terminal = fakeTerminal(120);
    const progress = new LiveProgress(terminal.stream, 'distribute');
    progress.update({ node: 'etcd-1', phase: 'start' });
    progress.update({ node: 'etcd-1', phase: 'done', done: 1, total: 3 });
    progress.update({ node: 'master-1', phase: 'start' });
    const frames = terminal.output().split('\r\x1b[K').filter(Boolean);
    assert.equal(frames.length, 3);
    assert.match(frames[0]!, /^distribute: planning · changing etcd-1 · \d+\.\d s$/);
    assert.match(frames[2]!, /^distribute: 1\/3 nodes done · changing master-1 · \d+\.\d s$/);
    assert.ok(!terminal.output().includes('\n'), 'the progress line must not scroll');
    progress.finish();
    assert.ok(terminal.output().endsWith('\r\x1b[K'));
  });

  it('shows the rollout step and phase', () => {
    const terminal = fakeTerminal(120);
    const progress = new LiveProgress(terminal.stream, 'distribute');
    progress.update({ node: 'master-2', phase: 'start', done: 4, total: 9, position: { step: 5, phase: 'master' }, steps: 8 });
    assert.match(terminal.output(), /^\r\x1b\[Kdistribute: step 5\/8 \(master\) · 4\/9 nodes done · changing master-2 · \d+\.\d s$/);
  });

  it('cuts the line to the terminal width', () => {
    const terminal = fakeTerminal(30);
    new LiveProgress(terminal.stream, 'distribute').update({ node: 'a-very-long-node-name-for-testing', phase: 'start' });
    const frame = terminal.output().replace('\r\x1b[K', '');
    assert.equal(frame.length, 29);
    assert.ok(frame.endsWith('…'));
  });
});

describe('files a node no longer needs', () => {
  const INVENTORY = `apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: unit}
spec:
  apiServer: {endpoint: "https://192.0.2.100:6443"}
  nodes:
    - {name: etcd-1, addresses: [192.0.2.11], roles: [etcd]}
    - {name: cp-1, addresses: [192.0.2.21], roles: [master]}
    - {name: wk-1, addresses: [192.0.2.31], roles: [worker], kubelet: {credentials: bootstrap}}
`;
  const inventory = parseInventory(INVENTORY, 'unit.yaml').inventory;
  const nodeOf = (name: string) => inventory.nodes.find((candidate) => candidate.name === name)!;

  it('lists installed paths the catalogue dropped', () => {
    const master = nodeOf('cp-1');
    const items = itemsForNode(inventory, master);
    const installed = [...items.flatMap(itemPaths), '/etc/kubernetes/old-override.crt', '/etc/kubernetes/kubelet.conf'];
    assert.deepEqual(obsoletePaths(installed, items, kubeletBootstrapFiles(inventory, master)), ['/etc/kubernetes/kubelet.conf', '/etc/kubernetes/old-override.crt']);
  });

  it('keeps the files of a bootstrapping kubelet', () => {
    const worker = nodeOf('wk-1');
    const kubelet = kubeletBootstrapFiles(inventory, worker)!;
    const items = itemsForNode(inventory, worker);
    // The kubelet wrote its own kubeconfig and certificates where kubetrust had installed them before the switch.
    const installed = [kubelet.bootstrapKubeconfig.path, kubelet.kubeconfigPath, `${kubelet.certDir}/kubelet.crt`, '/etc/kubernetes/pki/ca.key'];
    assert.deepEqual(obsoletePaths(installed, items, kubelet), ['/etc/kubernetes/pki/ca.key']);
  });
});
