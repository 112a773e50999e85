import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { EnrollError, createEnrollRequest, installEnrollment, loadAgentConfig, type EnrollInstallOptions } from '@kubetrust/agent';
import { AGENT_INSTALL_PATHS, AgentCsrError, agentInstallPaths, initState, renderControlScript, renderSystemdUnit, signAgentCsr } from '@kubetrust/controller';
import { parseInventory, type Inventory } from '@kubetrust/shared/dist/inventory';
import { silentLogger } from '@kubetrust/shared/dist/log';
import { createCsr, generateKeyPair, inspectCertificate, loadPrivateKey, publicKeySha256 } from '@kubetrust/shared/dist/pki';
import { CONTROLLER_CLI, runNode } from '../harness/local-cluster';

const INVENTORY = `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: enr}
spec:
  apiServer: {endpoint: "https://192.0.2.100:6443"}
  pki: {keyAlgorithm: ECDSA-P256}
  nodes:
    - {name: cp-1, addresses: [192.0.2.21], roles: [etcd, master]}
    - {name: wk-1, addresses: [192.0.2.31], roles: [worker], agent: {endpoint: "wk-1.enr.example:7600"}}
`;

function inventory(): Inventory {
  return parseInventory(INVENTORY, 'enr.yaml').inventory;
}

/** Lists every file below `dir` with its content, to show that a failed command changed nothing. */
function snapshot(dir: string): Record<string, string> {
  const files: Record<string, string> = {};
  for (const entry of fs.readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) {
      const file = path.join(entry.parentPath, entry.name);
      files[path.relative(dir, file)] = fs.readFileSync(file, 'utf8');
    }
  }
  return files;
}

describe('agent CSR signing', () => {
  let dir: string;
  let stateDir: string;
  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-sign-csr-'));
    stateDir = path.join(dir, 'state');
    await initState(inventory(), stateDir, silentLogger());
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('signs a CSR from enroll-request', async () => {
    const request = await createEnrollRequest({ configDir: path.join(dir, 'cp-1'), nodeName: 'cp-1', cluster: 'enr', host: '192.0.2.21' });
    const signed = await signAgentCsr(inventory(), stateDir, 'cp-1', request.csrPem);
    const certificate = inspectCertificate(signed.certificatePem);
    assert.equal(certificate.subject.commonName, 'cp-1');
    assert.deepEqual(certificate.ipAddresses, ['192.0.2.21']);
    assert.deepEqual(certificate.uris, ['kubetrust://enr/nodes/cp-1']);
    assert.deepEqual(certificate.extKeyUsage, ['serverAuth']);
    assert.equal(signed.controllerIdentity, 'kubetrust://enr/controller');
    assert.equal(signed.listen, '192.0.2.21:7443');
    assert.equal(signed.managementCaPem, fs.readFileSync(path.join(stateDir, 'management', 'ca.crt'), 'utf8'));
  });

  it('signs a CSR for a DNS agent endpoint', async () => {
    const request = await createEnrollRequest({ configDir: path.join(dir, 'wk-1'), nodeName: 'wk-1', cluster: 'enr', host: 'wk-1.enr.example' });
    const certificate = inspectCertificate((await signAgentCsr(inventory(), stateDir, 'wk-1', request.csrPem)).certificatePem);
    assert.deepEqual([...certificate.dnsNames].sort(), ['wk-1', 'wk-1.enr.example']);
    assert.deepEqual(certificate.ipAddresses, []);
  });

  it('rejects a wrong node name', async () => {
    const request = await createEnrollRequest({ configDir: path.join(dir, 'wrong-node'), nodeName: 'wk-1', cluster: 'enr', host: '192.0.2.21' });
    await assert.rejects(signAgentCsr(inventory(), stateDir, 'cp-1', request.csrPem), (error: Error) => {
      assert.ok(error instanceof AgentCsrError, String(error));
      assert.match(error.message, /common name "wk-1" instead of "cp-1"/);
      assert.match(error.message, /URIs kubetrust:\/\/enr\/nodes\/wk-1 instead of kubetrust:\/\/enr\/nodes\/cp-1/);
      return true;
    });
  });

  it('rejects a wrong host', async () => {
    const request = await createEnrollRequest({ configDir: path.join(dir, 'wrong-host'), nodeName: 'cp-1', cluster: 'enr', host: '192.0.2.99' });
    await assert.rejects(signAgentCsr(inventory(), stateDir, 'cp-1', request.csrPem), /IP addresses 192\.0\.2\.99 instead of 192\.0\.2\.21.*--host 192\.0\.2\.21/);
  });

  it('rejects a wrong cluster', async () => {
    const request = await createEnrollRequest({ configDir: path.join(dir, 'wrong-cluster'), nodeName: 'cp-1', cluster: 'other', host: '192.0.2.21' });
    await assert.rejects(signAgentCsr(inventory(), stateDir, 'cp-1', request.csrPem), /URIs kubetrust:\/\/other\/nodes\/cp-1 instead of kubetrust:\/\/enr\/nodes\/cp-1/);
  });

  it('rejects a bad signature', async () => {
    const request = await createEnrollRequest({ configDir: path.join(dir, 'bad-signature'), nodeName: 'cp-1', cluster: 'enr', host: '192.0.2.21' });
    // Flip one bit near the end of the DER, inside the signature value.
    const body = request.csrPem.split('\n').filter((line) => line !== '' && !line.startsWith('-----')).join('');
    const der = Buffer.from(body, 'base64');
    der[der.length - 4]! ^= 0x01;
    const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    await assert.rejects(signAgentCsr(inventory(), stateDir, 'cp-1', tampered), (error: Error) => error instanceof AgentCsrError && /invalid CSR: .*signature/.test(error.message));
  });

  it('rejects a key of another algorithm', async () => {
    const keys = await generateKeyPair('RSA-2048');
    const csr = createCsr({ commonName: 'cp-1', dnsNames: ['cp-1'], ipAddresses: ['192.0.2.21'], uris: ['kubetrust://enr/nodes/cp-1'] }, keys);
    await assert.rejects(signAgentCsr(inventory(), stateDir, 'cp-1', csr), /a RSA-2048 key instead of ECDSA-P256/);
  });

  it('rejects a node that is not in the inventory', async () => {
    const request = await createEnrollRequest({ configDir: path.join(dir, 'cp-1'), nodeName: 'cp-1', cluster: 'enr', host: '192.0.2.21' });
    await assert.rejects(signAgentCsr(inventory(), stateDir, 'nope', request.csrPem), /node "nope" is not in the inventory/);
  });

  it('signs with controller enroll --csr', async () => {
    const request = await createEnrollRequest({ configDir: path.join(dir, 'cli'), nodeName: 'cp-1', cluster: 'enr', host: '192.0.2.21' });
    const inventoryFile = path.join(dir, 'enr.yaml');
    fs.writeFileSync(inventoryFile, INVENTORY);
    const csrFile = path.join(dir, 'cp-1.csr');
    fs.writeFileSync(csrFile, request.csrPem);
    const out = path.join(dir, 'cli-out');
    const result = await runNode(CONTROLLER_CLI, ['enroll', '--inventory', inventoryFile, '--state-dir', stateDir, '--node', 'cp-1', '--csr', csrFile, '--out', out]);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(fs.readdirSync(out).sort(), ['agent.crt', 'management-ca.crt']);
    assert.match(result.stdout, /agent enroll-install --config-dir \/etc\/kubetrust\/agent/);
    assert.match(result.stdout, /--controller-identity kubetrust:\/\/enr\/controller --listen 192\.0\.2\.21:7443/);
    const key = loadPrivateKey(fs.readFileSync(path.join(dir, 'cli', 'agent.key.pending')));
    assert.equal(inspectCertificate(fs.readFileSync(path.join(out, 'agent.crt'))).publicKeySha256, publicKeySha256(key));

    const wrong = await runNode(CONTROLLER_CLI, ['enroll', '--inventory', inventoryFile, '--state-dir', stateDir, '--node', 'wk-1', '--csr', csrFile, '--out', path.join(dir, 'cli-wrong')]);
    assert.equal(wrong.code, 2, wrong.stderr);
    assert.match(wrong.stderr, /agent CSR for node "wk-1" does not match the inventory/);
    assert.ok(!fs.existsSync(path.join(dir, 'cli-wrong')), 'a rejected CSR left an output directory');
  });
});

describe('agent enroll-request and enroll-install', () => {
  let dir: string;
  let stateDir: string;
  let otherStateDir: string;
  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-agent-enroll-'));
    stateDir = path.join(dir, 'state');
    otherStateDir = path.join(dir, 'other-state');
    await initState(inventory(), stateDir, silentLogger());
    await initState(inventory(), otherStateDir, silentLogger());
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** Makes a pending request in a fresh configuration directory, signs it and returns the install options. */
  async function signedRequest(name: string, signingStateDir = stateDir): Promise<EnrollInstallOptions> {
    const configDir = path.join(dir, name, 'config');
    const request = await createEnrollRequest({ configDir, nodeName: 'cp-1', cluster: 'enr', host: '192.0.2.21' });
    const signed = await signAgentCsr(inventory(), signingStateDir, 'cp-1', request.csrPem);
    fs.writeFileSync(path.join(dir, name, 'agent.crt'), signed.certificatePem);
    fs.writeFileSync(path.join(dir, name, 'management-ca.crt'), signed.managementCaPem);
    return {
      configDir,
      certificateFile: path.join(dir, name, 'agent.crt'),
      managementCaFile: path.join(dir, name, 'management-ca.crt'),
      controllerIdentity: signed.controllerIdentity,
      listen: signed.listen,
      installRoot: path.join(dir, name, 'root'),
      stateDir: path.join(dir, name, 'agent-state'),
    };
  }

  it('keeps the pending key across requests', async () => {
    const configDir = path.join(dir, 'reuse');
    const first = await createEnrollRequest({ configDir, nodeName: 'cp-1', cluster: 'enr', host: '192.0.2.21' });
    const second = await createEnrollRequest({ configDir, nodeName: 'cp-1', cluster: 'enr', host: '192.0.2.21' });
    assert.equal(first.keyCreated, true);
    assert.equal(second.keyCreated, false);
    assert.equal(fs.statSync(first.keyFile).mode & 0o777, 0o600);
    assert.deepEqual(fs.readdirSync(configDir), ['agent.key.pending']);
    assert.doesNotMatch(first.csrPem, /PRIVATE KEY/);
  });

  it('rejects an invalid host, node or cluster', async () => {
    const configDir = path.join(dir, 'invalid');
    await assert.rejects(createEnrollRequest({ configDir, nodeName: 'cp-1', cluster: 'enr', host: '192.0.2.300' }), (error: Error) => error instanceof EnrollError && /^--host: "192\.0\.2\.300"/.test(error.message));
    await assert.rejects(createEnrollRequest({ configDir, nodeName: 'CP_1', cluster: 'enr', host: '192.0.2.21' }), /--node: "CP_1" is not a valid node name/);
    await assert.rejects(createEnrollRequest({ configDir, nodeName: 'cp-1', cluster: 'a.b', host: '192.0.2.21' }), /--cluster: "a\.b" is not a valid cluster name/);
    assert.ok(!fs.existsSync(configDir), 'a rejected request created the configuration directory');
  });

  it('installs an identity the agent loads', async () => {
    const options = await signedRequest('install');
    const result = await installEnrollment(options);
    const config = loadAgentConfig(result.configFile);
    assert.equal(config.nodeName, 'cp-1');
    assert.equal(config.cluster, 'enr');
    assert.deepEqual(config.listen, { host: '192.0.2.21', port: 7443 });
    assert.equal(config.controllerIdentity, 'kubetrust://enr/controller');
    assert.equal(fs.statSync(result.configFile).mode & 0o777, 0o600);
    assert.equal(fs.statSync(config.tls.keyFile).mode & 0o777, 0o600);
    assert.equal(path.dirname(config.tls.keyFile), result.identityDir);
    assert.ok(!fs.existsSync(path.join(options.configDir, 'agent.key.pending')));
  });

  it('rejects a certificate of another key and changes nothing', async () => {
    const options = await signedRequest('other-key');
    const foreign = await signedRequest('foreign');
    const before = snapshot(options.configDir);
    await assert.rejects(installEnrollment({ ...options, certificateFile: foreign.certificateFile }), (error: Error) => error instanceof EnrollError && /^--certificate: was not issued for the pending key/.test(error.message));
    assert.deepEqual(snapshot(options.configDir), before);
  });

  it('rejects another management CA and changes nothing', async () => {
    const options = await signedRequest('other-ca');
    const before = snapshot(options.configDir);
    const other = path.join(dir, 'other-ca', 'other-ca.crt');
    fs.copyFileSync(path.join(otherStateDir, 'management', 'ca.crt'), other);
    await assert.rejects(installEnrollment({ ...options, managementCaFile: other }), /--management-ca: the certificate was not issued by/);
    assert.deepEqual(snapshot(options.configDir), before);
  });

  it('rejects a wrong controller identity or listen address', async () => {
    const options = await signedRequest('wrong-fields');
    await assert.rejects(installEnrollment({ ...options, controllerIdentity: 'kubetrust://other/controller' }), /--controller-identity: "kubetrust:\/\/other\/controller" is not the controller of cluster "enr"; pass kubetrust:\/\/enr\/controller/);
    await assert.rejects(installEnrollment({ ...options, listen: '192.0.2.21' }), /--listen: "192\.0\.2\.21" is not host:port/);
    assert.deepEqual(fs.readdirSync(options.configDir), ['agent.key.pending']);
  });

  it('rejects an install without a request', async () => {
    const options = await signedRequest('no-request');
    fs.rmSync(path.join(options.configDir, 'agent.key.pending'));
    await assert.rejects(installEnrollment(options), /--config-dir: .*agent\.key\.pending is missing.*run `agent enroll-request`/);
  });

  it('replaces an identity and keeps the service hooks', async () => {
    const options = await signedRequest('again');
    const first = await installEnrollment(options);
    const edited = fs.readFileSync(first.configFile, 'utf8').replace('services: {}', 'services:\n  kubelet:\n    restart: {command: [/bin/true]}');
    fs.writeFileSync(first.configFile, edited);

    await createEnrollRequest({ configDir: options.configDir, nodeName: 'cp-1', cluster: 'enr', host: '192.0.2.21' }).then(async (request) => {
      const signed = await signAgentCsr(inventory(), stateDir, 'cp-1', request.csrPem);
      fs.writeFileSync(options.certificateFile, signed.certificatePem);
    });
    const second = await installEnrollment(options);
    assert.notEqual(second.identityDir, first.identityDir);
    assert.ok(!fs.existsSync(first.identityDir), 'the old identity is still there');
    const config = loadAgentConfig(second.configFile);
    assert.deepEqual(config.services.kubelet?.restart, { command: ['/bin/true'] });
    assert.equal(path.dirname(config.tls.certFile), second.identityDir);
  });
});

describe('agent install paths and service files', () => {
  it('puts every path but the systemd unit below the prefix', () => {
    const paths = agentInstallPaths('/srv/node-1');
    for (const [name, file] of Object.entries(AGENT_INSTALL_PATHS)) {
      if (name === 'systemdUnit') continue;
      assert.equal(paths[name as keyof typeof AGENT_INSTALL_PATHS], `/srv/node-1${file}`);
    }
    // systemd reads units from its own directory only.
    assert.equal(paths.systemdUnit, '/etc/systemd/system/kubetrust-agent.service');
    assert.equal(paths.configFile, '/srv/node-1/etc/kubetrust/agent/agent.yaml');
    assert.deepEqual(agentInstallPaths(), { ...AGENT_INSTALL_PATHS, configFile: '/etc/kubetrust/agent/agent.yaml' });
  });

  it('rejects a prefix that cannot be rendered unquoted', () => {
    assert.throws(() => agentInstallPaths('/srv/my node'), /prefix: "\/srv\/my node" is not an absolute path/);
    assert.throws(() => agentInstallPaths('relative'), /prefix: "relative"/);
    assert.throws(() => agentInstallPaths('/srv/../etc'), /prefix: "\/srv\/\.\.\/etc"/);
    assert.throws(() => renderSystemdUnit({ binary: '/usr/local/bin/agent%n', configFile: '/etc/a.yaml' }), /BINARY: /);
  });

  it('renders the unit and the control script', () => {
    const paths = agentInstallPaths('/');
    const unit = renderSystemdUnit(paths);
    assert.match(unit, /^ExecStart=\/usr\/local\/bin\/kubetrust-agent --config \/etc\/kubetrust\/agent\/agent\.yaml$/m);
    assert.match(unit, /^RestartPreventExitStatus=2$/m);
    assert.doesNotMatch(unit, /@[A-Z]+@/);
    const script = renderControlScript(paths);
    assert.match(script, /^BINARY='\/usr\/local\/bin\/kubetrust-agent'$/m);
    assert.match(script, /^PIDFILE='\/run\/kubetrust-agent\.pid'$/m);
    assert.doesNotMatch(script, /@[A-Z]+@/);
  });
});
