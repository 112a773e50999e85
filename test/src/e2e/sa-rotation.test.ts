/**
 * `controller sa rotate` on a running local cluster with two masters: tokens signed before each
 * phase keep verifying against every master's sa.pub until the old key is retired.
 */
import { strict as assert } from 'node:assert';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { splitPem } from '@kubetrust/shared/dist/pki';
import { distributedCluster, runController, smallInventory, type LocalCluster } from '../harness/local-cluster';

const SUBNET = '127.0.41';
const INVENTORY = smallInventory('sakeys', SUBNET, { masters: 2 });

/** Signs a token as a service-account issuer does: a payload signed with the node's sa.key. */
function signToken(keyPem: string, subject: string): { payload: Buffer; signature: Buffer } {
  const payload = Buffer.from(JSON.stringify({ sub: subject, iat: Date.now() }));
  return { payload, signature: crypto.sign('sha256', payload, { key: keyPem, dsaEncoding: 'ieee-p1363' }) };
}

/** Verifies a token as kube-apiserver does with --service-account-key-file: any key in the file may match. */
function verifies(publicPem: string, token: { payload: Buffer; signature: Buffer }): boolean {
  return splitPem(publicPem, 'PUBLIC KEY').some((key) => crypto.verify('sha256', token.payload, { key, dsaEncoding: 'ieee-p1363' }, token.signature));
}

describe('service-account key rotation', function () {
  this.timeout(180_000);
  let workdir: string;
  let cluster: LocalCluster;

  const onMaster = (master: string, file: 'sa.key' | 'sa.pub'): string => fs.readFileSync(cluster.file(master, `/etc/kubernetes/pki/${file}`), 'utf8');
  const rotate = (phase: string, extra: readonly string[] = []) =>
    runController(['sa', 'rotate', '--inventory', cluster.inventoryFile, '--state-dir', cluster.stateDir, '--phase', phase, '--output', 'json', ...extra]);

  before(async () => {
    ({ workdir, cluster } = await distributedCluster(INVENTORY, 'kubetrust-sa-'));
  });

  after(async () => {
    await cluster?.stop();
    if (workdir !== undefined) fs.rmSync(workdir, { recursive: true, force: true });
  });

  it('keeps tokens valid through all phases', async () => {
    const oldToken = signToken(onMaster('master-1', 'sa.key'), 'before-prepare');
    const oldKey = onMaster('master-1', 'sa.key');

    const prepared = await rotate('prepare');
    assert.equal(prepared.code, 0, `${prepared.stdout}\n${prepared.stderr}`);
    for (const master of ['master-1', 'master-2']) {
      assert.equal(splitPem(onMaster(master, 'sa.pub'), 'PUBLIC KEY').length, 2, `${master} verifies with both keys`);
      assert.equal(onMaster(master, 'sa.key'), oldKey, `${master} still signs with the old key`);
      assert.ok(verifies(onMaster(master, 'sa.pub'), oldToken));
    }
    assert.equal(fs.existsSync(cluster.file('worker-1', '/etc/kubernetes/pki/sa.pub')), false, 'a worker received a service-account key');

    const switched = await rotate('switch');
    assert.equal(switched.code, 0, switched.stderr);
    const newKey = onMaster('master-1', 'sa.key');
    assert.notEqual(newKey, oldKey);
    assert.equal(onMaster('master-2', 'sa.key'), newKey);
    const newToken = signToken(newKey, 'after-switch');
    for (const master of ['master-1', 'master-2']) {
      assert.ok(verifies(onMaster(master, 'sa.pub'), oldToken), `${master} rejects a token from before the switch`);
      assert.ok(verifies(onMaster(master, 'sa.pub'), newToken), `${master} rejects a token from after the switch`);
    }

    const early = await rotate('finish');
    assert.equal(early.code, 2);
    assert.match(early.stderr, /the grace period has \d+ minute\(s\) left/);
    const status = await runController(['sa', 'status', '--state-dir', cluster.stateDir]);
    assert.match(status.stdout, /phase switched, switched at /);

    const finished = await rotate('finish', ['--grace', '0s']);
    assert.equal(finished.code, 0, finished.stderr);
    for (const master of ['master-1', 'master-2']) {
      assert.equal(splitPem(onMaster(master, 'sa.pub'), 'PUBLIC KEY').length, 1);
      assert.equal(verifies(onMaster(master, 'sa.pub'), oldToken), false, `${master} still accepts the retired key`);
      assert.ok(verifies(onMaster(master, 'sa.pub'), newToken));
    }
    const validate = await runController(['validate', '--inventory', cluster.inventoryFile, '--state-dir', cluster.stateDir, '--live']);
    assert.equal(validate.code, 0, validate.stdout);
  });

  it('rolls back one phase at a time', async () => {
    const key = onMaster('master-1', 'sa.key');
    const token = signToken(key, 'before-rollback');
    assert.equal((await rotate('prepare')).code, 0);
    assert.equal((await rotate('switch')).code, 0);
    const newToken = signToken(onMaster('master-2', 'sa.key'), 'during-rotation');

    const back = await rotate('rollback');
    assert.equal(back.code, 0, back.stderr);
    assert.equal(onMaster('master-1', 'sa.key'), key, 'the old key does not sign again');
    assert.ok(verifies(onMaster('master-2', 'sa.pub'), newToken), 'a token signed during the rotation was rejected after one rollback');
    assert.ok(verifies(onMaster('master-2', 'sa.pub'), token));

    const out = await rotate('rollback');
    assert.equal(out.code, 0, out.stderr);
    assert.equal(splitPem(onMaster('master-1', 'sa.pub'), 'PUBLIC KEY').length, 1);
    assert.ok(verifies(onMaster('master-1', 'sa.pub'), token));
    const none = await rotate('rollback');
    assert.equal(none.code, 2);
    assert.match(none.stderr, /no rotation is in progress/);
    assert.ok(!fs.existsSync(path.join(cluster.stateDir, 'pki', 'sa-next.key')));
  });

  it('rejects a phase before masters catch up', async () => {
    fs.writeFileSync(cluster.file('master-2', '/etc/kubernetes/pki/sa.pub'), 'changed by hand\n');
    const refused = await rotate('prepare');
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /master master-2 does not hold the sa\.pub of the current phase yet; run `controller distribute --roles master --only sa\.key,sa\.pub`/);
    assert.equal((await runController(['sa', 'status', '--state-dir', cluster.stateDir])).stdout, 'No service-account rotation in progress: one key signs and verifies.\n');
  });
});
