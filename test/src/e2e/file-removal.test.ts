/**
 * End to end: a node that loses a role loses that role's files. master-2 becomes a worker, and
 * the plan lists each file of a master for removal, among them the cluster CA key and the
 * service-account key. distribute deletes them through the agent, which backs them up, so
 * `controller rollback` puts them back.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { itemPaths, itemsForNode } from '@kubetrust/shared/dist/catalogue';
import { loadInventory } from '@kubetrust/shared/dist/inventory';
import { LocalCluster, runController, smallInventory } from '../harness/local-cluster';

const SUBNET = '127.0.53';

interface PlanJson {
  readonly nodes: readonly { readonly name: string; readonly status: string; readonly removedFiles?: readonly string[]; readonly plan: readonly { readonly action: string; readonly paths: readonly string[] }[] }[];
}

describe('files of a role a node lost', function () {
  this.timeout(300_000);
  let workdir: string;
  let cluster: LocalCluster;
  let masterPaths: string[];
  let workerPaths: string[];

  const run = async (command: 'plan' | 'distribute', extra: readonly string[] = []): Promise<PlanJson> => {
    const result = await runController([command, '--inventory', cluster.inventoryFile, '--state-dir', cluster.stateDir, '--output', 'json', ...extra]);
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    return JSON.parse(result.stdout) as PlanJson;
  };
  const node = (report: PlanJson, name: string) => report.nodes.find((candidate) => candidate.name === name)!;
  const removals = (report: PlanJson, name: string): string[] => node(report, name).plan.filter((entry) => entry.action === 'remove').flatMap((entry) => entry.paths).sort();

  before(async () => {
    workdir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-removal-'));
    const inventoryFile = path.join(workdir, 'cluster.yaml');
    fs.writeFileSync(inventoryFile, smallInventory('removal', SUBNET, { masters: 2 }));
    cluster = await LocalCluster.create({ inventoryFile, workdir, etcd: false });
    assert.equal((await cluster.init()).code, 0);
    await cluster.enrollAll();
    await cluster.startAgents();
    assert.equal((await cluster.distribute()).code, 0);
    const inventory = loadInventory(inventoryFile).inventory;
    const master2 = inventory.nodes.find((candidate) => candidate.name === 'master-2')!;
    masterPaths = itemsForNode(inventory, master2).flatMap(itemPaths).sort();
    workerPaths = itemsForNode(inventory, { ...master2, roles: ['worker'] }).flatMap(itemPaths).sort();
    // master-2 becomes a worker.
    fs.writeFileSync(inventoryFile, fs.readFileSync(inventoryFile, 'utf8').replace(`{name: master-2, addresses: [${SUBNET}.22], roles: [master]}`, `{name: master-2, addresses: [${SUBNET}.22], roles: [worker]}`));
  });

  after(async () => {
    if (cluster !== undefined) await cluster.stop();
    if (workdir !== undefined) fs.rmSync(workdir, { recursive: true, force: true });
  });

  it('plans to remove the master files', async () => {
    const plan = await run('plan');
    const expected = masterPaths.filter((file) => !workerPaths.includes(file));
    assert.ok(expected.includes('/etc/kubernetes/pki/ca.key'), expected.join(', '));
    assert.ok(expected.includes('/etc/kubernetes/pki/sa.key'), expected.join(', '));
    assert.deepEqual(removals(plan, 'master-2'), expected);
    assert.deepEqual(removals(plan, 'master-1'), []);
    // A plan of part of the catalogue cannot tell what the node no longer needs.
    assert.deepEqual(removals(await run('plan', ['--only', 'kube-proxy.conf']), 'master-2'), []);
    assert.ok(fs.existsSync(cluster.file('master-2', '/etc/kubernetes/pki/ca.key')), 'the plan removed a file');
  });

  it('removes them and keeps the worker files', async () => {
    const report = await run('distribute');
    const expected = masterPaths.filter((file) => !workerPaths.includes(file));
    assert.equal(node(report, 'master-2').status, 'changed');
    assert.deepEqual([...(node(report, 'master-2').removedFiles ?? [])].sort(), expected);
    for (const file of expected) assert.ok(!fs.existsSync(cluster.file('master-2', file)), `${file} is still on master-2`);
    for (const file of workerPaths) assert.ok(fs.existsSync(cluster.file('master-2', file)), `${file} is missing on master-2`);
    const again = await run('distribute');
    assert.equal(node(again, 'master-2').status, 'unchanged');
  });

  it('puts them back on rollback', async () => {
    const rollback = await runController(['rollback', '--inventory', cluster.inventoryFile, '--state-dir', cluster.stateDir, '--node', 'master-2', '--output', 'json']);
    assert.equal(rollback.code, 0, rollback.stderr);
    assert.ok(fs.existsSync(cluster.file('master-2', '/etc/kubernetes/pki/ca.key')), 'the rollback did not restore the CA key');
    // The next run removes them again.
    const report = await run('distribute');
    assert.ok((node(report, 'master-2').removedFiles ?? []).includes('/etc/kubernetes/pki/ca.key'));
    assert.ok(!fs.existsSync(cluster.file('master-2', '/etc/kubernetes/pki/ca.key')));
  });
});
