/**
 * KeyPool: node keys generated on worker threads, handed out one per turn of the event loop.
 */
import { strict as assert } from 'node:assert';
import * as crypto from 'node:crypto';
import { KeyPool } from '@kubetrust/shared/dist/pki';

describe('key pool', function () {
  this.timeout(60_000);

  it('returns distinct ECDSA key pairs whose halves match', async () => {
    const pool = new KeyPool('ECDSA-P256', 40, { threads: 2, batchSize: 8 });
    try {
      const pairs = await Promise.all(Array.from({ length: 40 }, () => pool.take()));
      const seen = new Set<string>();
      for (const pair of pairs) {
        assert.equal(pair.publicKey.algorithm, 'ECDSA-P256');
        assert.match(pair.privateKeyPem, /^-----BEGIN EC PRIVATE KEY-----\n/);
        const derived = crypto.createPublicKey(crypto.createPrivateKey(pair.privateKeyPem)).export({ type: 'spki', format: 'der' });
        assert.ok(derived.equals(pair.publicKey.spki), 'public key does not belong to the private key');
        seen.add(pair.publicKey.spki.toString('hex'));
      }
      assert.equal(seen.size, 40);
    } finally {
      await pool.close();
    }
  });

  it('writes RSA private keys as PKCS#1', async () => {
    const pool = new KeyPool('RSA-2048', 1, { threads: 1, batchSize: 1 });
    try {
      const pair = await pool.take();
      assert.match(pair.privateKeyPem, /^-----BEGIN RSA PRIVATE KEY-----\n/);
      const key = crypto.createPublicKey({ key: pair.publicKey.spki, format: 'der', type: 'spki' });
      assert.equal(key.asymmetricKeyDetails?.modulusLength, 2048);
    } finally {
      await pool.close();
    }
  });

  it('refuses to hand out more keys than it was made for', async () => {
    const pool = new KeyPool('ECDSA-P256', 2, { threads: 1, batchSize: 2 });
    try {
      await pool.take();
      await pool.take();
      await assert.rejects(pool.take(), /all 2 ECDSA-P256 keys of this pool are taken/);
    } finally {
      await pool.close();
    }
  });

  it('resolves waiting callers one per turn of the event loop', async () => {
    const pool = new KeyPool('ECDSA-P256', 64, { threads: 1, batchSize: 32 });
    let turn = 0;
    let ticking = true;
    const tick = (): void => {
      turn++;
      if (ticking) setImmediate(tick);
    };
    setImmediate(tick);
    try {
      const turns = await Promise.all(Array.from({ length: 64 }, () => pool.take().then(() => turn)));
      assert.equal(new Set(turns).size, 64, `callers resolved in the same turn: ${turns.join(',')}`);
    } finally {
      ticking = false;
      await pool.close();
    }
  });

  it('rejects waiting callers when closed', async () => {
    // close() runs before any reply of the worker can arrive, so all three callers still wait.
    const pool = new KeyPool('RSA-4096', 3, { threads: 1, batchSize: 1 });
    const waiting = [pool.take(), pool.take(), pool.take()];
    await pool.close();
    for (const take of waiting) await assert.rejects(take, /the pool of RSA-4096 keys was closed/);
    await assert.rejects(pool.take(), /was closed/);
  });

  it('rejects an unknown algorithm by name', () => {
    assert.throws(() => new KeyPool('DSA-1024' as never, 1, { threads: 1, batchSize: 1 }), /invalid key algorithm "DSA-1024"/);
  });
});
