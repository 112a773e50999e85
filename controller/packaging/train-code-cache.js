#!/usr/bin/env node
/**
 * Writes the code cache of the controller bundle from a training run: the bundle is compiled as the
 * loader compiles it, without a cache, and then runs `init`, `enroll`, `distribute`, `plan`, `issue
 * --out` and `validate --out` for a cluster of three nodes whose agents run in this process on
 * 127.0.0.1. V8 then caches the bytecode of the functions that these commands ran. Other commands
 * compile what they need as they go.
 *
 * A controller command loading this cache spent about 7 ms less CPU in a distribute to 16 nodes
 * than one loading a cache of every function, which is 1.7 times the size (docs/benchmarks.md).
 *
 * Usage: node controller/packaging/train-code-cache.js PACKAGE_DIR OUTPUT_FILE
 * Exits non-zero with a message on stderr when any step fails; build-bundle.js then writes the
 * cache of every function instead.
 */
'use strict';

const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const YAML = require('yaml');
const { bundlePaths, compileBundle, runBundle } = require('../bin/bundle-loader.js');

// The addresses, from the documentation range 192.0.2.0/24, only go into certificates and
// kubeconfigs: the controller reaches each agent at 127.0.0.1 on a port of its own.
const NODES = [
  { name: 'etcd-1', roles: ['etcd'], addresses: ['192.0.2.11'] },
  { name: 'master-1', roles: ['master'], addresses: ['192.0.2.21'] },
  { name: 'worker-1', roles: ['worker'], addresses: ['192.0.2.31'] },
];
const SERVICES = ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubelet', 'kube-proxy'];

/** Returns a TCP port on 127.0.0.1 that was free a moment ago. */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function inventoryYaml(ports) {
  return YAML.stringify({
    apiVersion: 'kubetrust/v1',
    kind: 'Cluster',
    metadata: { name: 'code-cache' },
    spec: {
      apiServer: { endpoint: 'https://192.0.2.21:6443' },
      pki: { keyAlgorithm: 'ECDSA-P256' },
      nodes: NODES.map((node, index) => ({ ...node, agent: { endpoint: `127.0.0.1:${ports[index]}` } })),
    },
  });
}

async function main() {
  const [packageDir, outputFile] = process.argv.slice(2);
  if (packageDir === undefined || outputFile === undefined) throw new Error('usage: train-code-cache.js PACKAGE_DIR OUTPUT_FILE');
  const paths = bundlePaths(packageDir);
  const script = compileBundle(paths.bundle, undefined);
  const { runController } = runBundle(script, paths.bundle);
  const { loadAgentConfig, startAgent } = require('@kubetrust/agent');
  const { silentLogger } = require('@kubetrust/shared/dist/log');

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-code-cache-'));
  const agents = [];
  try {
    const inventory = path.join(dir, 'cluster.yaml');
    const state = path.join(dir, 'state');
    const ports = [];
    while (ports.length < NODES.length) ports.push(await freePort());
    fs.writeFileSync(inventory, inventoryYaml(ports));

    // The commands print their reports on stdout, which the build does not need.
    const controller = async (...args) => {
      process.exitCode = undefined;
      const write = process.stdout.write;
      process.stdout.write = () => true;
      let code;
      try {
        code = await runController(['node', 'controller', '--log-level', 'warn', ...args]);
      } finally {
        process.stdout.write = write;
        process.exitCode = undefined;
      }
      if (code !== 0) throw new Error(`controller ${args[0]} exited with ${code}`);
    };
    await controller('init', '-i', inventory, '-s', state);
    for (const node of NODES) {
      const nodeDir = path.join(dir, 'nodes', node.name);
      await controller('enroll', '-i', inventory, '-s', state, '-n', node.name, '--out', path.join(nodeDir, 'agent'), '--install-root', path.join(nodeDir, 'root'), '--agent-state-dir', path.join(nodeDir, 'agent-state'));
      const configFile = path.join(nodeDir, 'agent', 'agent.yaml');
      const config = YAML.parse(fs.readFileSync(configFile, 'utf8'));
      // Nothing serves on these nodes: every restart succeeds at once and no health check runs.
      config.services = Object.fromEntries(SERVICES.map((service) => [service, { restart: { command: ['/bin/true'] }, health: 'none' }]));
      fs.writeFileSync(configFile, YAML.stringify(config), { mode: 0o600 });
      agents.push(await startAgent(loadAgentConfig(configFile), silentLogger()));
    }
    await controller('distribute', '-i', inventory, '-s', state);
    await controller('plan', '-i', inventory, '-s', state, '--output', 'json');
    await controller('issue', '-i', inventory, '-s', state, '--out', path.join(dir, 'out'));
    await controller('validate', '-i', inventory, '-s', state, '--out', path.join(dir, 'out'));
  } finally {
    await Promise.all(agents.map((agent) => agent.stop()));
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const temporary = `${outputFile}.tmp-${process.pid}`;
  fs.writeFileSync(temporary, script.createCachedData());
  fs.renameSync(temporary, outputFile);
}

main().then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  },
);
