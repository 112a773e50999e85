#!/usr/bin/env node
/**
 * `npm run demo`: the main job on the built-in example. Starts one agent per inventory node on its
 * loopback address, runs `controller init`, `controller enroll` and `controller distribute`, shows
 * that a second distribute changes nothing, checks the etcd cluster with the apiserver's etcd client
 * certificate, and stops everything it started.
 *
 *   npm run demo -- [--inventory FILE] [--workdir DIR] [--keep]
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { LocalCluster, REPO_ROOT, which, type DistributeJson } from './harness/local-cluster';

function step(text: string): void {
  process.stdout.write(`\n== ${text}\n`);
}

function etcdctlHealth(cluster: LocalCluster): Promise<string> {
  const master = cluster.nodes.find((node) => node.spec.roles.includes('master'));
  const members = cluster.nodes.filter((node) => node.etcd !== undefined);
  if (master === undefined) return Promise.resolve('no master to take the apiserver etcd client certificate from');
  const pki = path.join(master.installRoot, 'etc/kubernetes/pki');
  const args = [
    `--endpoints=${members.map((node) => `https://${node.etcd!.address}:2379`).join(',')}`,
    `--cacert=${path.join(pki, 'etcd/ca.crt')}`,
    `--cert=${path.join(pki, 'apiserver-etcd-client.crt')}`,
    `--key=${path.join(pki, 'apiserver-etcd-client.key')}`,
    'endpoint',
    'health',
  ];
  return new Promise((resolve) => {
    execFile('etcdctl', args, { env: { ...process.env, ETCDCTL_API: '3' }, timeout: 30_000 }, (error, stdout, stderr) => {
      resolve(`${stdout}${stderr}${error !== null ? `etcdctl exited with ${String(error.code)}\n` : ''}`);
    });
  });
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      inventory: { type: 'string', default: path.join(REPO_ROOT, 'examples', 'cluster.yaml') },
      workdir: { type: 'string' },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write('usage: npm run demo -- [--inventory FILE] [--workdir DIR] [--keep]\n  --keep  leave the work directory in place (it is removed otherwise when it was created by the demo)\n');
    return 0;
  }
  const workdir = values.workdir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-demo-'));
  const cluster = await LocalCluster.create({ inventoryFile: values.inventory, workdir });
  process.stdout.write(`kubetrust demo: cluster "${cluster.inventory.name}" with ${cluster.inventory.nodes.length} nodes, work directory ${workdir}\n`);
  if (cluster.etcdBinary === undefined) {
    process.stdout.write('etcd is not installed (Debian package etcd-server), so etcd members are not started; files are still distributed.\n');
  }
  let failed = false;
  try {
    step('controller init');
    const init = await cluster.init(['--log-level', 'warn']);
    process.stdout.write(init.stdout + init.stderr);
    if (init.code !== 0) return init.code;

    step('controller enroll (one agent configuration per node) and start the agents');
    await cluster.enrollAll();
    await cluster.startAgents();
    for (const node of cluster.nodes) process.stdout.write(`  agent ${node.spec.name} listening on ${node.spec.agent.endpoint}, install root ${node.installRoot}\n`);

    step('controller distribute');
    const first = await cluster.distribute();
    process.stdout.write(first.stdout);
    if (first.code !== 0) {
      process.stdout.write(first.stderr);
      failed = true;
    }

    step('controller distribute again: nothing changed, so nothing is written or restarted');
    const second = await cluster.distributeJson();
    const summary = (second.report as DistributeJson).nodes.map((node) => `${node.name}=${node.status}`).join(' ');
    process.stdout.write(`  ${summary}\n`);
    if (second.result.code !== 0) failed = true;

    step('etcd cluster health, checked with the apiserver etcd client certificate from a master');
    if (cluster.etcdBinary !== undefined && which('etcdctl') !== undefined) {
      process.stdout.write(await etcdctlHealth(cluster));
    } else {
      process.stdout.write('  skipped: etcd or etcdctl is not installed (Debian packages etcd-server and etcd-client)\n');
    }
  } finally {
    await cluster.stop();
    if (values.workdir === undefined && !values.keep) fs.rmSync(workdir, { recursive: true, force: true });
    else process.stdout.write(`\nFiles are kept in ${workdir}\n`);
  }
  return failed ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`demo failed: ${error instanceof Error ? error.stack ?? error.message : String(error)}\n`);
    process.exitCode = 1;
  },
);
