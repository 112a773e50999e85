/**
 * The agent serves only the controller identity issued by its management CA: a real agent server
 * with mutual TLS on a loopback address, called by real gRPC clients holding various certificates.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { loadAgentConfig, startAgent, type RunningAgent } from '@kubetrust/agent';
import { StateDir, enrollNode, initState, signLeaf } from '@kubetrust/controller';
import { ErrorReason, loadAgentProto, reasonOf, type AgentClient, type NodeState__Output } from '@kubetrust/proto';
import { controllerIdentity } from '@kubetrust/shared/dist/identity';
import { parseInventory } from '@kubetrust/shared/dist/inventory';
import { silentLogger } from '@kubetrust/shared/dist/log';
import { createCertificate, generateKeyPair, privateKeyToPem } from '@kubetrust/shared/dist/pki';

const INVENTORY = `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: auth}
spec:
  apiServer: {endpoint: "https://127.0.21.100:6443"}
  pki: {keyAlgorithm: ECDSA-P256}
  nodes:
    - {name: node-a, addresses: [127.0.21.11], roles: [etcd, master, worker]}
`;

interface Identity {
  readonly certificatePem: string;
  readonly privateKeyPem: string;
}

function client(caPem: string, identity: Identity | undefined): AgentClient {
  const credentials =
    identity === undefined
      ? grpc.credentials.createSsl(Buffer.from(caPem))
      : grpc.credentials.createSsl(Buffer.from(caPem), Buffer.from(identity.privateKeyPem), Buffer.from(identity.certificatePem));
  return new (loadAgentProto().kubetrust.agent.v1.Agent)('127.0.21.11:7443', credentials, { 'grpc.ssl_target_name_override': 'node-a' });
}

function getState(agentClient: AgentClient): Promise<{ error: grpc.ServiceError | null; state?: NodeState__Output }> {
  return new Promise((resolve) => {
    agentClient.GetState({ files: [] }, { deadline: Date.now() + 10_000 }, (error, state) => {
      agentClient.close();
      resolve({ error, ...(state !== undefined ? { state } : {}) });
    });
  });
}

/** A client certificate with the controller's URI, signed by a CA the agent has never seen. */
async function foreignControllerIdentity(): Promise<Identity> {
  const caKeys = await generateKeyPair('ECDSA-P256');
  const now = Date.now();
  const caPem = createCertificate(
    { subject: { commonName: 'impostor-ca' }, notBefore: new Date(now - 60_000), notAfter: new Date(now + 86_400_000), isCA: true, keyUsage: ['keyCertSign', 'digitalSignature'], extKeyUsage: [] },
    caKeys.publicKey,
    { privateKey: caKeys.privateKey },
  );
  const keys = await generateKeyPair('ECDSA-P256');
  const certificatePem = createCertificate(
    {
      subject: { commonName: 'kubetrust-controller' },
      notBefore: new Date(now - 60_000),
      notAfter: new Date(now + 3_600_000),
      isCA: false,
      keyUsage: ['digitalSignature'],
      extKeyUsage: ['clientAuth'],
      uris: [controllerIdentity('auth')],
    },
    keys.publicKey,
    { issuer: { certificatePem: caPem, privateKey: caKeys.privateKey }, privateKey: caKeys.privateKey },
  );
  return { certificatePem, privateKeyPem: privateKeyToPem(keys.privateKey) };
}

describe('agent authorisation over mutual TLS', function () {
  this.timeout(60_000);
  let workdir: string;
  let agent: RunningAgent;
  let managementCaPem: string;
  let controller: Identity;
  let agentOwn: Identity;

  before(async () => {
    workdir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-auth-'));
    const inventory = parseInventory(INVENTORY, 'auth.yaml').inventory;
    const stateDir = path.join(workdir, 'state');
    await initState(inventory, stateDir, silentLogger());
    const out = path.join(workdir, 'agent');
    const enrolled = await enrollNode(inventory, stateDir, 'node-a', out, silentLogger(), {
      installRoot: path.join(workdir, 'root'),
      stateDirOnNode: path.join(workdir, 'agent-state'),
    });
    agent = await startAgent(loadAgentConfig(enrolled.configFile), silentLogger());
    managementCaPem = fs.readFileSync(path.join(stateDir, 'management', 'ca.crt'), 'utf8');
    controller = {
      certificatePem: fs.readFileSync(path.join(stateDir, 'management', 'controller.crt'), 'utf8'),
      privateKeyPem: fs.readFileSync(path.join(stateDir, 'management', 'controller.key'), 'utf8'),
    };
    agentOwn = { certificatePem: fs.readFileSync(path.join(out, 'agent.crt'), 'utf8'), privateKeyPem: fs.readFileSync(path.join(out, 'agent.key'), 'utf8') };
  });

  after(async () => {
    await agent?.stop();
    if (workdir !== undefined) fs.rmSync(workdir, { recursive: true, force: true });
  });

  it('serves the controller identity', async () => {
    const { error, state } = await getState(client(managementCaPem, controller));
    assert.equal(error, null);
    assert.equal(state?.node_name, 'node-a');
  });

  it('rejects a certificate from another CA', async () => {
    const { error, state } = await getState(client(managementCaPem, await foreignControllerIdentity()));
    assert.equal(state, undefined);
    assert.equal(error?.code, grpc.status.UNAUTHENTICATED, error?.details);
    assert.equal(reasonOf(error!), ErrorReason.Unauthenticated);
    assert.match(error?.details ?? '', /management CA/);
  });

  it('rejects an agent certificate used as a client', async () => {
    const { error, state } = await getState(client(managementCaPem, agentOwn));
    assert.equal(state, undefined);
    assert.equal(error?.code, grpc.status.UNAUTHENTICATED, error?.details);
    assert.equal(reasonOf(error!), ErrorReason.Unauthenticated);
  });

  it('rejects a client without a certificate', async () => {
    const { error, state } = await getState(client(managementCaPem, undefined));
    assert.equal(state, undefined);
    assert.equal(error?.code, grpc.status.UNAUTHENTICATED, error?.details);
  });

  it('denies a management client that is not the controller', async () => {
    const management = await new StateDir(path.join(workdir, 'state')).loadKeyMaterial(
      { certificate: path.join(workdir, 'state', 'management', 'ca.crt'), privateKey: path.join(workdir, 'state', 'management', 'ca.key') },
      'management CA',
    );
    const keys = await generateKeyPair('ECDSA-P256');
    const certificatePem = signLeaf(management, { commonName: 'other-client', extKeyUsage: ['clientAuth'], uris: [controllerIdentity('another-cluster')] }, keys.publicKey, 3_600_000, new Date());
    const { error, state } = await getState(client(managementCaPem, { certificatePem, privateKeyPem: privateKeyToPem(keys.privateKey) }));
    assert.equal(state, undefined);
    assert.equal(error?.code, grpc.status.PERMISSION_DENIED, error?.details);
    assert.equal(reasonOf(error!), ErrorReason.PermissionDenied);
    assert.match(error?.details ?? '', /only the controller may call this agent/);
  });

  it('refuses a second agent on the same state directory', async () => {
    const configFile = path.join(workdir, 'agent', 'agent.yaml');
    await assert.rejects(startAgent(loadAgentConfig(configFile), silentLogger()), /another agent \(process \d+\) already uses state directory/);
  });
});
