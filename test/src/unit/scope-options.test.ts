/**
 * `--nodes`, `--roles` and `--only` of `controller distribute` and `controller plan`: an unknown
 * name exits with 2 and names both the bad value and the valid ones, before any agent is contacted.
 * Each node's agent endpoint is a loopback TCP server of this test that counts connections.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { itemsForNode } from '@kubetrust/shared/dist/catalogue';
import { parseInventory } from '@kubetrust/shared/dist/inventory';
import { runController } from '../harness/local-cluster';

const NODES = ['etcd-1', 'cp-1', 'wk-1'];

function inventoryText(ports: readonly number[]): string {
  return `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: scope}
spec:
  apiServer: {endpoint: "https://192.0.2.100:6443"}
  pki: {keyAlgorithm: ECDSA-P256}
  nodes:
    - {name: etcd-1, addresses: [192.0.2.11], roles: [etcd], agent: {endpoint: "127.0.0.1:${ports[0]}"}}
    - {name: cp-1, addresses: [192.0.2.21], roles: [master], agent: {endpoint: "127.0.0.1:${ports[1]}"}}
    - {name: wk-1, addresses: [192.0.2.31], roles: [worker], agent: {endpoint: "127.0.0.1:${ports[2]}"}}
`;
}

describe('unknown names in scope options', function () {
  this.timeout(60_000);

  let dir: string;
  let inventoryFile: string;
  let stateDir: string;
  let itemNames: string[];
  const agents: net.Server[] = [];
  let connections = 0;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-scope-'));
    const ports: number[] = [];
    for (let index = 0; index < NODES.length; index++) {
      const server = net.createServer((socket) => {
        connections++;
        socket.destroy();
      });
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', resolve);
      });
      agents.push(server);
      ports.push((server.address() as net.AddressInfo).port);
    }
    const text = inventoryText(ports);
    inventoryFile = path.join(dir, 'cluster.yaml');
    fs.writeFileSync(inventoryFile, text);
    const inventory = parseInventory(text, inventoryFile).inventory;
    itemNames = [...new Set(inventory.nodes.flatMap((node) => itemsForNode(inventory, node).map((item) => item.name)))];
    stateDir = path.join(dir, 'state');
    const init = await runController(['init', '--inventory', inventoryFile, '--state-dir', stateDir]);
    assert.equal(init.code, 0, init.stderr);
  });

  after(async () => {
    await Promise.all(agents.map((server) => new Promise((resolve) => server.close(resolve))));
    if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true });
  });

  const cases = [
    { option: '--nodes', value: 'cp-1,wk-9', named: /--nodes: unknown node wk-9;/, valid: () => NODES },
    { option: '--roles', value: 'master,ingress', named: /--roles: unknown role ingress;/, valid: () => ['etcd', 'master', 'worker'] },
    { option: '--only', value: 'apiserver,apiservr', named: /--only: apiservr not found on any node/, valid: () => itemNames },
  ];

  for (const command of ['distribute', 'plan']) {
    for (const { option, value, named, valid } of cases) {
      it(`${command} ${option} exits 2 for an unknown name`, async () => {
        const before = connections;
        const result = await runController([command, '--inventory', inventoryFile, '--state-dir', stateDir, option, value]);
        assert.equal(result.code, 2, `${result.stdout}\n${result.stderr}`);
        assert.match(result.stderr, named);
        const validList = result.stderr.slice(result.stderr.indexOf(';'));
        for (const name of valid()) assert.match(validList, new RegExp(`[ ,]${name.replace(/\./g, '\\.')}(,|$)`, 'm'), `${name} missing from the valid names`);
        assert.equal(result.stdout, '', 'printed a report');
        assert.equal(connections, before, 'contacted an agent');
      });
    }
  }
});
