import { strict as assert } from 'node:assert';
import { chooseAction, detectScript, identityProblem, parseDetect } from '@kubetrust/controller/dist/bootstrap';
import { agentInstallPaths } from '@kubetrust/controller/dist/agent-install';
import { selfSignedCa, signLeaf, type KeyMaterial } from '@kubetrust/controller';
import { generateKeyPair, privateKeyToPem } from '@kubetrust/shared/dist/pki';

const DAY_MS = 24 * 60 * 60 * 1000;
const NOW = new Date('2026-12-05T00:00:00Z');

async function makeCa(name: string): Promise<KeyMaterial> {
  const keys = await generateKeyPair('ECDSA-P256');
  return { certificatePem: selfSignedCa(name, keys, 3650 * DAY_MS, NOW), privateKey: keys.privateKey, privateKeyPem: privateKeyToPem(keys.privateKey) };
}

async function identity(ca: KeyMaterial, validityMs: number, issuedAt: Date): Promise<string> {
  const keys = await generateKeyPair('ECDSA-P256');
  return signLeaf(ca, { commonName: 'worker-1', extKeyUsage: ['serverAuth'], dnsNames: ['worker-1'] }, keys.publicKey, validityMs, issuedAt);
}

/** Detection output as the script prints it on a node. */
function output(parts: { version?: string; config?: string; identity?: string; init?: string; arch?: string }): string {
  return [
    '--kubetrust--os', 'Linux',
    '--kubetrust--arch', parts.arch ?? 'x86_64',
    '--kubetrust--init', parts.init ?? 'fallback',
    '--kubetrust--version', parts.version ?? 'absent',
    '--kubetrust--config', parts.config ?? 'absent',
    '--kubetrust--identity', parts.identity ?? '',
    '',
  ].join('\n');
}

describe('bootstrap decisions', () => {
  let ca: KeyMaterial;
  let otherCa: KeyMaterial;

  before(async () => {
    ca = await makeCa('management');
    otherCa = await makeCa('other-management');
  });

  it('reads every section of the detection output', () => {
    const detected = parseDetect(output({ version: '0.1.0', config: 'present', identity: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----', init: 'systemd', arch: 'aarch64' }));
    assert.deepEqual(
      { os: detected.os, arch: detected.arch, init: detected.init, version: detected.installedVersion, config: detected.configPresent },
      { os: 'Linux', arch: 'aarch64', init: 'systemd', version: '0.1.0', config: true },
    );
    assert.match(detected.identityPem ?? '', /BEGIN CERTIFICATE/);
    const bare = parseDetect(output({}));
    assert.equal(bare.installedVersion, undefined);
    assert.equal(bare.identityPem, undefined);
    assert.equal(bare.configPresent, false);
  });

  it('asks the node for every path below its prefix', () => {
    const script = detectScript(agentInstallPaths('/srv/node-1'));
    assert.match(script, /'\/srv\/node-1\/usr\/local\/bin\/kubetrust-agent' --version/);
    assert.match(script, /\/srv\/node-1\/etc\/kubetrust\/agent\/agent\.yaml/);
    assert.match(script, /\/run\/systemd\/system/);
  });

  it('keeps an identity of this management CA with more than a third of its life left', async () => {
    const pem = await identity(ca, 365 * DAY_MS, NOW);
    assert.equal(identityProblem(pem, ca.certificatePem, new Date(NOW.getTime() + 200 * DAY_MS), 1 / 3), undefined);
  });

  it('re-enrols an identity close to expiry, expired, from another CA or missing', async () => {
    const pem = await identity(ca, 365 * DAY_MS, NOW);
    assert.match(identityProblem(pem, ca.certificatePem, new Date(NOW.getTime() + 250 * DAY_MS), 1 / 3) ?? '', /less than 33% of its lifetime left/);
    assert.match(identityProblem(pem, ca.certificatePem, new Date(NOW.getTime() + 400 * DAY_MS), 1 / 3) ?? '', /expired/);
    assert.match(identityProblem(pem, otherCa.certificatePem, NOW, 1 / 3) ?? '', /different management CA/);
    assert.match(identityProblem(undefined, ca.certificatePem, NOW, 1 / 3) ?? '', /no agent identity/);
    assert.match(identityProblem('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----', ca.certificatePem, NOW, 1 / 3) ?? '', /not a readable certificate/);
  });

  it('chooses install, upgrade, enrol or start from what the node holds', () => {
    assert.equal(chooseAction(parseDetect(output({})), '0.1.0', 'no agent identity on the node').action, 'install');
    const current = parseDetect(output({ version: '0.1.0', config: 'present' }));
    assert.equal(chooseAction(current, '0.1.0', undefined).action, 'start');
    assert.equal(chooseAction(current, '0.1.0', 'the agent identity expired').action, 'enroll');
    const older = parseDetect(output({ version: '0.0.9', config: 'present' }));
    const upgrade = chooseAction(older, '0.1.0', undefined);
    assert.deepEqual(upgrade, { action: 'upgrade', reasons: ['agent 0.0.9 installed, 0.1.0 available'] });
    assert.equal(chooseAction(older, '0.1.0', 'the agent identity was signed by a different management CA').reasons.length, 2);
    assert.equal(chooseAction(parseDetect(output({ version: '0.1.0' })), '0.1.0', undefined).action, 'enroll');
  });
});
