/**
 * Typed reasons of failed agent calls, from a real agent over mutual TLS. A raw gRPC client checks
 * the reason and status the agent sends. The controller's AgentConnection checks what the
 * controller then does: repeat the call, take the response along, or stop.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { loadAgentConfig, startAgent, type RunningAgent } from '@kubetrust/agent';

import { AgentCallError, AgentConnection, enrollNode, initState } from '@kubetrust/controller';
import { ErrorReason, loadAgentProto, reasonOf, responseOf, type AgentClient, type ApplyRequest, type ApplyResponse__Output } from '@kubetrust/proto';
import { parseInventory, type Inventory } from '@kubetrust/shared/dist/inventory';
import { silentLogger } from '@kubetrust/shared/dist/log';
import * as YAML from 'yaml';

const ADDRESS = '127.0.24.11';
const INVENTORY = `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: reasons}
spec:
  apiServer: {endpoint: "https://127.0.24.100:6443"}
  pki: {keyAlgorithm: ECDSA-P256}
  nodes:
    - {name: node-r, addresses: [${ADDRESS}], roles: [etcd, master, worker]}
`;

type Outcome = { error: grpc.ServiceError; response?: undefined } | { error?: undefined; response: ApplyResponse__Output };

function apply(agentClient: AgentClient, request: ApplyRequest): Promise<Outcome> {
  return new Promise((resolve) => {
    agentClient.Apply(request, { deadline: Date.now() + 30_000 }, (error, response) => {
      resolve(error !== null ? { error } : { response: response! });
    });
  });
}

function fileChange(relative: string, text: string): ApplyRequest['files'] {
  return [{ path: relative, mode: 0o644, uid: 0, gid: 0, data: Buffer.from(text) }];
}

describe('typed reasons of agent errors', function () {
  this.timeout(120_000);
  let workdir: string;
  let inventory: Inventory;
  let agent: RunningAgent | undefined;
  let configFile: string;
  let credentials: { managementCaPem: string; certificatePem: string; privateKeyPem: string };
  let raw: AgentClient;

  /** Restarts the agent with `kube-proxy` hooks from the test. */
  async function restartAgentWith(hooks: Record<string, unknown>): Promise<void> {
    await agent?.stop();
    const config = YAML.parse(fs.readFileSync(configFile, 'utf8')) as { services?: Record<string, unknown> };
    config.services = { 'kube-proxy': hooks };
    fs.writeFileSync(configFile, YAML.stringify(config));
    agent = await startAgent(loadAgentConfig(configFile), silentLogger());
  }

  before(async () => {
    workdir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-reasons-'));
    inventory = parseInventory(INVENTORY, 'reasons.yaml').inventory;
    const stateDir = path.join(workdir, 'state');
    await initState(inventory, stateDir, silentLogger());
    const enrolled = await enrollNode(inventory, stateDir, 'node-r', path.join(workdir, 'agent'), silentLogger(), {
      installRoot: path.join(workdir, 'root'),
      stateDirOnNode: path.join(workdir, 'agent-state'),
    });
    configFile = enrolled.configFile;
    credentials = {
      managementCaPem: fs.readFileSync(path.join(stateDir, 'management', 'ca.crt'), 'utf8'),
      certificatePem: fs.readFileSync(path.join(stateDir, 'management', 'controller.crt'), 'utf8'),
      privateKeyPem: fs.readFileSync(path.join(stateDir, 'management', 'controller.key'), 'utf8'),
    };
    const channel = grpc.credentials.createSsl(Buffer.from(credentials.managementCaPem), Buffer.from(credentials.privateKeyPem), Buffer.from(credentials.certificatePem));
    raw = new (loadAgentProto().kubetrust.agent.v1.Agent)(`${ADDRESS}:7443`, channel, { 'grpc.ssl_target_name_override': 'node-r' });
  });

  after(async () => {
    raw?.close();
    await agent?.stop();
    if (workdir !== undefined) fs.rmSync(workdir, { recursive: true, force: true });
  });

  it('sends HEALTH_CHECK_FAILED with the response, which the controller takes along', async () => {
    // A long output: the details and the trailer carry up to the agent's 2,000 characters of it.
    await restartAgentWith({
      restart: { command: ['/bin/true'] },
      health: { command: ['/bin/sh', '-c', 'echo not serving; head -c 5000 /dev/zero | tr "\\0" x; exit 1'] },
      timeoutSeconds: 1,
    });
    const outcome = await apply(raw, { change_id: 'health-1', files: fileChange('/etc/kubernetes/health-1.txt', 'one'), restart_services: ['kube-proxy'] });
    assert.ok(outcome.error !== undefined, 'Apply succeeded with an unhealthy service');
    assert.equal(reasonOf(outcome.error), ErrorReason.HealthCheckFailed);
    assert.equal(outcome.error.code, grpc.status.FAILED_PRECONDITION);
    assert.match(outcome.error.details, /kube-proxy .*not serving/);
    const encoded = responseOf(outcome.error);
    assert.ok(encoded !== undefined, 'no response in the trailer');
    const response = loadAgentProto().kubetrust.agent.v1.Agent.service.Apply.responseDeserialize(encoded) as ApplyResponse__Output;
    assert.deepEqual(response.changed_paths, ['/etc/kubernetes/health-1.txt']);
    assert.equal(response.services[0]?.healthy, false);
    assert.ok((response.services[0]?.output.length ?? 0) >= 2_000, `output of ${response.services[0]?.output.length} characters`);

    const connection = new AgentConnection('reasons', inventory.nodes[0]!, credentials);
    try {
      const applied = await connection.apply({ change_id: 'health-2', files: fileChange('/etc/kubernetes/health-2.txt', 'two'), restart_services: ['kube-proxy'] });
      assert.deepEqual(applied.changed_paths, ['/etc/kubernetes/health-2.txt']);
      assert.equal(applied.services[0]?.name, 'kube-proxy');
      assert.equal(applied.services[0]?.healthy, false);
      assert.match(applied.services[0]?.output ?? '', /not serving/);
    } finally {
      connection.close();
    }
  });

  it('refuses a change during another one as BUSY, and the controller repeats it', async () => {
    const marker = path.join(workdir, 'restart-started');
    await restartAgentWith({ restart: { command: ['/bin/sh', '-c', `touch ${marker}; sleep 2`] }, timeoutSeconds: 5 });
    const first = apply(raw, { change_id: 'slow-1', files: fileChange('/etc/kubernetes/slow-1.txt', 'one'), restart_services: ['kube-proxy'] });
    for (let waited = 0; !fs.existsSync(marker) && waited < 200; waited++) await new Promise((resolve) => setTimeout(resolve, 50));
    assert.ok(fs.existsSync(marker), 'the first change never restarted its service');

    // The first change is still restarting its service (for 2 s).
    const second = await apply(raw, { change_id: 'slow-2', files: fileChange('/etc/kubernetes/slow-2.txt', 'two'), restart_services: [] });
    assert.ok(second.error !== undefined, 'a second change ran during the first');
    assert.equal(reasonOf(second.error), ErrorReason.Busy);
    assert.equal(second.error.code, grpc.status.UNAVAILABLE);
    assert.ok(!fs.existsSync(path.join(workdir, 'root', 'etc/kubernetes/slow-2.txt')), 'the refused change wrote its file');

    const connection = new AgentConnection('reasons', inventory.nodes[0]!, credentials, { busyRetryDelaysMs: [500, 500, 500, 500, 500, 500, 500, 500] });
    try {
      const response = await connection.apply({ change_id: 'slow-4', files: fileChange('/etc/kubernetes/slow-4.txt', 'four'), restart_services: [] });
      assert.deepEqual(response.changed_paths, ['/etc/kubernetes/slow-4.txt']);
    } finally {
      connection.close();
    }
    assert.ok((await first).response !== undefined);
  });

  it('stops after the last repeat and names the busy agent', async () => {
    const marker = path.join(workdir, 'restart-started-2');
    await restartAgentWith({ restart: { command: ['/bin/sh', '-c', `touch ${marker}; sleep 3`] }, timeoutSeconds: 5 });
    const first = apply(raw, { change_id: 'long-1', files: fileChange('/etc/kubernetes/long-1.txt', 'one'), restart_services: ['kube-proxy'] });
    for (let waited = 0; !fs.existsSync(marker) && waited < 200; waited++) await new Promise((resolve) => setTimeout(resolve, 50));
    const connection = new AgentConnection('reasons', inventory.nodes[0]!, credentials, { busyRetryDelaysMs: [100, 100] });
    try {
      await assert.rejects(
        connection.apply({ change_id: 'long-2', files: fileChange('/etc/kubernetes/long-2.txt', 'two'), restart_services: [] }),
        (error: unknown) =>
          error instanceof AgentCallError && error.reason === ErrorReason.Busy && /agent at 127\.0\.24\.11:7443 stayed busy with another change after 3 attempts of Apply/.test(error.message),
      );
    } finally {
      connection.close();
    }
    assert.ok((await first).response !== undefined);
  });

  it('sends FILE_SYSTEM when a file cannot be written', async () => {
    await restartAgentWith({ restart: { command: ['/bin/true'] } });
    // A regular file where the change needs a directory: creating the directory fails on any file system.
    fs.mkdirSync(path.join(workdir, 'root', 'etc'), { recursive: true });
    fs.writeFileSync(path.join(workdir, 'root', 'etc', 'blocked'), 'not a directory');
    const outcome = await apply(raw, { change_id: 'fs-1', files: fileChange('/etc/blocked/inner.txt', 'x'), restart_services: [] });
    assert.ok(outcome.error !== undefined, 'Apply wrote below a regular file');
    assert.equal(reasonOf(outcome.error), ErrorReason.FileSystem);
    assert.equal(outcome.error.code, grpc.status.ABORTED);
    assert.equal(fs.readFileSync(path.join(workdir, 'root', 'etc', 'blocked'), 'utf8'), 'not a directory');
  });

  it('sends INVALID_REQUEST for a path with ..', async () => {
    const outcome = await apply(raw, { change_id: 'bad-1', files: fileChange('/etc/../escape.txt', 'x'), restart_services: [] });
    assert.ok(outcome.error !== undefined);
    assert.equal(reasonOf(outcome.error), ErrorReason.InvalidRequest);
    assert.equal(outcome.error.code, grpc.status.INVALID_ARGUMENT);
  });
});
