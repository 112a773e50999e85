/**
 * Reading node files into GetState's FileState: repeated reads of unchanged content give the same
 * description, changed content a new one, and a result a caller changes does not leak into later
 * reads.
 */
import { strict as assert } from 'node:assert';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { readFileState } from '@kubetrust/shared/dist/file-state';
import { renderKubeconfig } from '@kubetrust/shared/dist/kubeconfig';
import { publicKeySha256 } from '@kubetrust/shared/dist/pki';

function keyPair(): { privatePem: string; publicSha256: string } {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), publicSha256: publicKeySha256(publicKey) };
}

describe('node file state', () => {
  let dir: string;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-file-state-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('private key read twice and changed', async () => {
    const file = path.join(dir, 'a.key');
    const first = keyPair();
    fs.writeFileSync(file, first.privatePem, { mode: 0o600 });
    const once = await readFileState(file, '/etc/a.key', 'FILE_KIND_PRIVATE_KEY');
    const twice = await readFileState(file, '/etc/a.key', 'FILE_KIND_PRIVATE_KEY');
    assert.equal(once.public_key_sha256, first.publicSha256);
    assert.deepStrictEqual(twice, once);

    const second = keyPair();
    fs.writeFileSync(file, second.privatePem, { mode: 0o600 });
    const changed = await readFileState(file, '/etc/a.key', 'FILE_KIND_PRIVATE_KEY');
    assert.equal(changed.public_key_sha256, second.publicSha256);
    assert.notEqual(changed.sha256, once.sha256);
  });

  it('same content under two paths and modes', async () => {
    const { privatePem, publicSha256 } = keyPair();
    fs.writeFileSync(path.join(dir, 'one.key'), privatePem, { mode: 0o600 });
    fs.writeFileSync(path.join(dir, 'two.key'), privatePem, { mode: 0o640 });
    const firstFile = await readFileState(path.join(dir, 'one.key'), '/etc/one.key', 'FILE_KIND_PRIVATE_KEY');
    const secondFile = await readFileState(path.join(dir, 'two.key'), '/etc/two.key', 'FILE_KIND_PRIVATE_KEY');
    assert.equal(firstFile.path, '/etc/one.key');
    assert.equal(secondFile.path, '/etc/two.key');
    assert.equal(firstFile.mode, 0o600);
    assert.equal(secondFile.mode, 0o640);
    assert.equal(secondFile.public_key_sha256, publicSha256);
  });

  it('changed kubeconfig result stays private', async () => {
    const { privatePem, publicSha256 } = keyPair();
    const file = path.join(dir, 'admin.conf');
    fs.writeFileSync(
      file,
      renderKubeconfig({ clusterName: 'c', server: 'https://192.0.2.1:6443', user: 'admin', certificateAuthorityPem: '', clientCertificatePem: '', clientKeyPem: privatePem }),
      { mode: 0o600 },
    );
    const first = await readFileState(file, '/etc/kubernetes/admin.conf', 'FILE_KIND_KUBECONFIG');
    assert.equal(first.kubeconfig?.client_key_public_sha256, publicSha256);
    assert.ok(first.kubeconfig !== null);
    first.kubeconfig.server = 'https://changed.invalid';
    const second = await readFileState(file, '/etc/kubernetes/admin.conf', 'FILE_KIND_KUBECONFIG');
    assert.equal(second.kubeconfig?.server, 'https://192.0.2.1:6443');
  });

  it('same content read as two kinds', async () => {
    const { privatePem, publicSha256 } = keyPair();
    const file = path.join(dir, 'c.key');
    fs.writeFileSync(file, privatePem, { mode: 0o600 });
    const asKey = await readFileState(file, '/etc/c.key', 'FILE_KIND_PRIVATE_KEY');
    const asCertificate = await readFileState(file, '/etc/c.key', 'FILE_KIND_CERTIFICATE');
    assert.equal(asKey.public_key_sha256, publicSha256);
    assert.match(asCertificate.error, /^not a valid certificate/);
    assert.equal(asCertificate.public_key_sha256, '');
  });

  it('invalid content reports an error each time', async () => {
    const file = path.join(dir, 'bad.key');
    fs.writeFileSync(file, 'not a key');
    const once = await readFileState(file, '/etc/bad.key', 'FILE_KIND_PRIVATE_KEY');
    const twice = await readFileState(file, '/etc/bad.key', 'FILE_KIND_PRIVATE_KEY');
    assert.match(once.error, /^not a valid private key/);
    assert.equal(twice.error, once.error);
  });
});
