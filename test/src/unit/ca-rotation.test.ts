/**
 * CA rotation without nodes. The table of what each state trusts and signs with is checked against
 * a rule: during any push between two neighbouring states, both sides trust every certificate in
 * use. Also tested: the material that distribute derives from a rotation record, and the phase
 * checks that reject a phase before any node is contacted. The inventory uses the documentation
 * addresses 192.0.2.0/24, and nothing is contacted.
 */
import { strict as assert } from 'node:assert';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ClusterMaterial, StateDir, initState, selfSignedCa } from '@kubetrust/controller';
import { CaRotationFiles, caView, sideOf, type CaRotationRecord, type CaRotationState } from '@kubetrust/controller/dist/ca-rotation-state';
import { CA_PHASES, CaRotationError, caItemNames, phaseProblem, rotatableCa, rotateCa } from '@kubetrust/controller/dist/ca-rotation';
import { itemsForNode } from '@kubetrust/shared/dist/catalogue';
import { parseInventory, type Inventory } from '@kubetrust/shared/dist/inventory';
import { silentLogger } from '@kubetrust/shared/dist/log';
import { generateKeyPair, inspectCertificate, privateKeyToPem, splitPem } from '@kubetrust/shared/dist/pki';

function inventoryOf(layout = 'kubeadm'): Inventory {
  return parseInventory(
    `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: rotation-unit}
spec:
  apiServer: {endpoint: "https://192.0.2.100:6443"}
  pki: {keyAlgorithm: ECDSA-P256, layout: ${layout}}
  nodes:
    - {name: etcd-1, addresses: [192.0.2.11], roles: [etcd]}
    - {name: cp-1, addresses: [192.0.2.21], roles: [master]}
    - {name: wk-1, addresses: [192.0.2.31], roles: [worker]}
`,
    'rotation.yaml',
  ).inventory;
}

/** Pushes a rotation makes, as (from, to) pairs of states, where undefined means no rotation. */
const PUSHES: readonly [CaRotationState | undefined, CaRotationState | undefined][] = [
  [undefined, 'prepared'],
  ['prepared', 'clients-updated'],
  ['clients-updated', 'servers-updated'],
  ['servers-updated', 'finishing'],
  ['prepared', 'rolling-back'],
  ['clients-updated', 'rolling-back'],
  ['servers-updated', 'rolling-back'],
  ['rolling-back', 'rolled-back'],
  ['rolled-back', undefined],
];

describe('CA rotation states', () => {
  it('trusts every signing CA across pushes', () => {
    for (const [from, to] of PUSHES) {
      const before = caView(from);
      const after = caView(to);
      for (const side of ['client', 'server'] as const) {
        for (const issuer of [before[side], after[side]]) {
          assert.ok(before.trust.includes(issuer), `${from ?? 'none'} -> ${to ?? 'none'}: a ${side} certificate from the ${issuer} CA is not trusted in ${from ?? 'none'}`);
          assert.ok(after.trust.includes(issuer), `${from ?? 'none'} -> ${to ?? 'none'}: a ${side} certificate from the ${issuer} CA is not trusted in ${to ?? 'none'}`);
        }
      }
    }
  });

  it('moves clients before servers', () => {
    assert.deepEqual(caView('prepared'), { trust: ['old', 'new'], client: 'old', server: 'old' });
    assert.deepEqual(caView('clients-updated'), { trust: ['old', 'new'], client: 'new', server: 'old' });
    assert.deepEqual(caView('servers-updated'), { trust: ['old', 'new'], client: 'new', server: 'new' });
    assert.deepEqual(caView('finishing'), { trust: ['new'], client: 'new', server: 'new' });
    assert.deepEqual(caView(undefined), { trust: ['old'], client: 'old', server: 'old' });
  });

  it('lets each phase start only from its own states', () => {
    const allowed: Record<string, readonly (CaRotationState | undefined)[]> = {
      prepare: [undefined, 'prepared'],
      'update-clients': ['prepared', 'clients-updated'],
      'update-servers': ['clients-updated', 'servers-updated'],
      finish: ['servers-updated', 'finishing'],
      rollback: ['prepared', 'clients-updated', 'servers-updated', 'rolling-back', 'rolled-back'],
    };
    const states: (CaRotationState | undefined)[] = [undefined, 'prepared', 'clients-updated', 'servers-updated', 'finishing', 'rolling-back', 'rolled-back'];
    for (const phase of CA_PHASES) {
      for (const state of states) {
        const problem = phaseProblem('etcd-ca', phase, state);
        assert.equal(problem === undefined, allowed[phase]!.includes(state), `${phase} in state ${state ?? 'none'}: ${problem ?? 'allowed'}`);
      }
    }
    assert.match(phaseProblem('etcd-ca', 'update-servers', 'prepared') ?? '', /update-servers needs state clients-updated, and the etcd-ca rotation is in state prepared; run --phase update-clients or --phase rollback/);
    assert.match(phaseProblem('etcd-ca', 'rollback', 'finishing') ?? '', /cannot come back; run --phase finish/);
  });

  it('counts serverAuth as serving', () => {
    assert.equal(sideOf(['serverAuth', 'clientAuth']), 'server');
    assert.equal(sideOf(['serverAuth']), 'server');
    assert.equal(sideOf(['clientAuth']), 'client');
  });
});

describe('CA rotation input checks', () => {
  let workdir: string;
  let stateDir: string;
  const inventory = inventoryOf();

  before(async () => {
    workdir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-ca-rotation-unit-'));
    stateDir = path.join(workdir, 'state');
    await initState(inventory, stateDir, silentLogger());
  });

  after(() => fs.rmSync(workdir, { recursive: true, force: true }));

  it('names the valid CAs for an unknown one', () => {
    assert.throws(() => rotatableCa(inventory, 'root-ca'), (error: Error) => error instanceof CaRotationError && /"root-ca" is not a cluster CA; use one of: cluster-ca, etcd-ca, front-proxy-ca/.test(error.message));
  });

  it('sends a shared etcd CA to the cluster CA', () => {
    const single = inventoryOf('single-ca');
    assert.throws(() => rotatableCa(single, 'etcd-ca'), /rotate --ca cluster-ca/);
    assert.equal(rotatableCa(single, 'cluster-ca'), 'cluster-ca');
  });

  it('lists only the files of the rotating CA', () => {
    const names = caItemNames(inventory, 'front-proxy-ca');
    assert.deepEqual(names.sort(), ['front-proxy-ca.crt', 'front-proxy-client'].sort());
    assert.ok(caItemNames(inventory, 'cluster-ca').includes('cluster-ca-signer.crt'));
    assert.ok(!caItemNames(inventory, 'etcd-ca').includes('apiserver'));
  });

  it('rejects phases out of order', async () => {
    await assert.rejects(rotateCa(inventory, stateDir, silentLogger(), 'etcd-ca', 'update-clients'), /not started; run --phase prepare first/);
    await assert.rejects(rotateCa(inventory, stateDir, silentLogger(), 'etcd-ca', 'finish'), CaRotationError);
    await assert.rejects(rotateCa(inventory, stateDir, silentLogger(), 'etcd-ca', 'rollback'), /nothing to roll back/);
  });

  it('rejects a second rotating CA', async () => {
    const files = new CaRotationFiles(new StateDir(stateDir));
    const record: CaRotationRecord = { ca: 'front-proxy-ca', state: 'prepared', startedAt: '2026-01-01T00:00:00Z', updatedAt: '2026-01-01T00:00:00Z', oldSerial: '1', newSerial: '2' };
    await files.setRecord(record);
    try {
      await assert.rejects(rotateCa(inventory, stateDir, silentLogger(), 'etcd-ca', 'prepare'), /front-proxy-ca is rotating \(state prepared\); finish or roll back that rotation before rotating etcd-ca/);
      await assert.rejects(rotateCa(inventory, stateDir, silentLogger(), 'front-proxy-ca', 'finish'), /finish needs state servers-updated/);
    } finally {
      await files.setRecord(undefined);
    }
  });
});

describe('material during a CA rotation', () => {
  let workdir: string;
  let state: StateDir;
  const inventory = inventoryOf();
  let next: { certificatePem: string; keyPem: string };

  before(async () => {
    workdir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-ca-material-'));
    state = new StateDir(path.join(workdir, 'state'));
    await initState(inventory, state.root, silentLogger());
    const pair = await generateKeyPair('ECDSA-P256');
    next = { certificatePem: selfSignedCa('kubernetes', pair, 24 * 3600_000, new Date()), keyPem: privateKeyToPem(pair.privateKey) };
    await state.writeKeyMaterial(new CaRotationFiles(state).nextFiles('cluster-ca'), next.certificatePem, next.keyPem);
  });

  after(() => fs.rmSync(workdir, { recursive: true, force: true }));

  async function materialIn(rotationState: CaRotationState | undefined): Promise<ClusterMaterial> {
    const record: CaRotationRecord | undefined =
      rotationState === undefined ? undefined : { ca: 'cluster-ca', state: rotationState, startedAt: '2026-01-01T00:00:00Z', updatedAt: '2026-01-01T00:00:00Z', oldSerial: '1', newSerial: '2' };
    await new CaRotationFiles(state).setRecord(record);
    return ClusterMaterial.load(state, inventory);
  }

  const serials = (pem: string): string[] => splitPem(pem, 'CERTIFICATE').map((block) => inspectCertificate(block).serialNumber);

  it('bundles trust and signs per side', async () => {
    const old = fs.readFileSync(state.caFiles('cluster-ca').certificate, 'utf8');
    const material = await materialIn('clients-updated');
    assert.deepEqual(serials(material.caCertificate('cluster-ca')), [...serials(old), ...serials(next.certificatePem)]);
    assert.equal(material.issuerCertificate('cluster-ca', 'client'), next.certificatePem);
    assert.equal(material.issuerCertificate('cluster-ca', 'server'), old);
    const master = inventory.nodes.find((node) => node.name === 'cp-1')!;
    const statics = itemsForNode(inventory, master).filter((item) => item.type === 'static' && 'ca' in item.source && item.source.ca === 'cluster-ca');
    const content = (name: string): string => {
      const item = statics.find((candidate) => candidate.name === name);
      assert.ok(item?.type === 'static', `cp-1 has no ${name}`);
      return material.staticContent(item);
    };
    assert.equal(serials(content('cluster-ca.crt')).length, 2);
    assert.equal(content('cluster-ca-signer.crt'), next.certificatePem, 'the signer certificate is not the client CA alone');
    assert.ok(new crypto.X509Certificate(content('cluster-ca-signer.crt')).checkPrivateKey(crypto.createPrivateKey(content('cluster-ca.key'))), 'signer certificate and key differ');
  });

  it('keeps the stored CA text unchanged without a rotation', async () => {
    const material = await materialIn(undefined);
    assert.equal(material.caCertificate('cluster-ca'), fs.readFileSync(state.caFiles('cluster-ca').certificate, 'utf8'));
  });

  it('uses the new CA while finishing', async () => {
    const material = await materialIn('finishing');
    assert.equal(material.caCertificate('cluster-ca'), next.certificatePem);
    assert.equal(material.issuerCertificate('cluster-ca', 'server'), next.certificatePem);
    await new CaRotationFiles(state).setRecord(undefined);
  });
});
