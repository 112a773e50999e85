/**
 * The controller's unary gRPC client against a grpc-js server with mutual TLS on 127.0.0.1: the
 * responses, failures and trailers it must read as grpc-js's own client reads them.
 */
import { strict as assert } from 'node:assert';
import * as net from 'node:net';
import * as tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { UnaryChannel, type UnaryOutcome, type UnaryTarget } from '@kubetrust/controller/dist/grpc-unary';
import { GrpcStatus } from '@kubetrust/proto/dist/wire';
import { createCertificate, generateKeyPair, privateKeyToPem } from '@kubetrust/shared/dist/pki';

const DAY_MS = 86_400_000;

interface Pki {
  readonly caPem: string;
  readonly server: { certificatePem: string; privateKeyPem: string };
  readonly client: { certificatePem: string; privateKeyPem: string };
}

async function makePki(): Promise<Pki> {
  const now = Date.now();
  const caKeys = await generateKeyPair('ECDSA-P256');
  const caPem = createCertificate(
    { subject: { commonName: 'unary-test-ca' }, notBefore: new Date(now - 60_000), notAfter: new Date(now + DAY_MS), isCA: true, keyUsage: ['keyCertSign', 'cRLSign'], extKeyUsage: [] },
    caKeys.publicKey,
    { privateKey: caKeys.privateKey },
  );
  const leaf = async (commonName: string, usage: 'serverAuth' | 'clientAuth', dnsNames: string[]) => {
    const keys = await generateKeyPair('ECDSA-P256');
    const certificatePem = createCertificate(
      { subject: { commonName }, notBefore: new Date(now - 60_000), notAfter: new Date(now + DAY_MS / 2), isCA: false, keyUsage: ['digitalSignature'], extKeyUsage: [usage], dnsNames },
      keys.publicKey,
      { issuer: { certificatePem: caPem, privateKey: caKeys.privateKey }, privateKey: caKeys.privateKey },
    );
    return { certificatePem, privateKeyPem: privateKeyToPem(keys.privateKey) };
  };
  return { caPem, server: await leaf('node-u', 'serverAuth', ['node-u']), client: await leaf('unary-client', 'clientAuth', []) };
}

const passBytes = {
  requestSerialize: (value: Buffer) => value,
  requestDeserialize: (value: Buffer) => value,
  responseSerialize: (value: Buffer) => value,
  responseDeserialize: (value: Buffer) => value,
  requestStream: false,
  responseStream: false,
} as const;

const SERVICE = {
  Echo: { path: '/test.Unary/Echo', ...passBytes },
  Large: { path: '/test.Unary/Large', ...passBytes },
  Fail: { path: '/test.Unary/Fail', ...passBytes },
  Slow: { path: '/test.Unary/Slow', ...passBytes },
};

const LARGE = Buffer.alloc(3 * 1024 * 1024 + 17, 0x5a);

describe('unary gRPC client', function () {
  this.timeout(30_000);
  let pki: Pki;
  let server: grpc.Server;
  let port: number;
  const slowTimers: NodeJS.Timeout[] = [];

  function target(overrides: Partial<UnaryTarget> = {}): UnaryTarget {
    return {
      host: '127.0.0.1',
      port,
      serverName: 'node-u',
      secureContext: tls.createSecureContext({ ca: pki.caPem, cert: pki.client.certificatePem, key: pki.client.privateKeyPem }),
      checkServerIdentity: (hostname, certificate) => tls.checkServerIdentity(hostname, certificate),
      ...overrides,
    };
  }

  before(async () => {
    pki = await makePki();
    server = new grpc.Server();
    server.addService(SERVICE, {
      Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => callback(null, Buffer.concat([Buffer.from('echo:'), call.request])),
      Large: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => callback(null, LARGE),
      Fail: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
        const metadata = new grpc.Metadata();
        metadata.set('kubetrust-reason', 'FILE_SYSTEM');
        metadata.set('kubetrust-response-bin', Buffer.from([0, 1, 2, 250]));
        callback({ code: grpc.status.ABORTED, details: 'disk full: /etc/kubernetes, 100 % used', metadata });
      },
      Slow: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
        slowTimers.push(setTimeout(() => callback(null, Buffer.from('late')), 5_000));
      },
    });
    const credentials = grpc.ServerCredentials.createSsl(Buffer.from(pki.caPem), [{ private_key: Buffer.from(pki.server.privateKeyPem), cert_chain: Buffer.from(pki.server.certificatePem) }], true);
    port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', credentials, (error, bound) => (error ? reject(error) : resolve(bound))));
  });

  after(() => {
    for (const timer of slowTimers) clearTimeout(timer);
    server.forceShutdown();
  });

  /** Runs `use` with a new channel and closes the channel afterwards. */
  async function withChannel(overrides: Partial<UnaryTarget>, use: (channel: UnaryChannel) => Promise<void>): Promise<void> {
    const channel = new UnaryChannel(target(overrides));
    try {
      await use(channel);
    } finally {
      channel.close();
    }
  }

  function expectMessage(outcome: UnaryOutcome): Buffer {
    if ('error' in outcome) assert.fail(`call failed: ${outcome.error.code} ${outcome.error.details}`);
    return outcome.message;
  }

  function expectFailure(outcome: UnaryOutcome) {
    if (!('error' in outcome)) assert.fail('call succeeded');
    return outcome.error;
  }

  it('returns responses on one connection', async () => {
    await withChannel({}, async (channel) => {
      for (const text of ['one', '', 'three']) {
        assert.equal(expectMessage(await channel.call('/test.Unary/Echo', Buffer.from(text), 5_000)).toString(), `echo:${text}`);
      }
    });
  });

  it('reads a multi-frame response', async () => {
    await withChannel({}, async (channel) => {
      assert.ok(expectMessage(await channel.call('/test.Unary/Large', Buffer.alloc(0), 10_000)).equals(LARGE));
    });
  });

  it('rejects an oversized response', async () => {
    await withChannel({ maxResponseBytes: 1024 * 1024 }, async (channel) => {
      const error = expectFailure(await channel.call('/test.Unary/Large', Buffer.alloc(0), 10_000));
      assert.equal(error.code, GrpcStatus.RESOURCE_EXHAUSTED);
      assert.match(error.details, /1048576 bytes/);
      // The connection still serves the next call.
      assert.equal(expectMessage(await channel.call('/test.Unary/Echo', Buffer.from('after'), 5_000)).toString(), 'echo:after');
    });
  });

  it('returns a failure with its trailers', async () => {
    await withChannel({}, async (channel) => {
      const error = expectFailure(await channel.call('/test.Unary/Fail', Buffer.alloc(0), 5_000));
      assert.equal(error.code, GrpcStatus.ABORTED);
      assert.equal(error.details, 'disk full: /etc/kubernetes, 100 % used');
      assert.deepEqual(error.metadata.get('kubetrust-reason'), ['FILE_SYSTEM']);
      assert.deepEqual(error.metadata.get('kubetrust-response-bin'), [Buffer.from([0, 1, 2, 250])]);
    });
  });

  it('reports an unknown method', async () => {
    await withChannel({}, async (channel) => {
      assert.equal(expectFailure(await channel.call('/test.Unary/Missing', Buffer.alloc(0), 5_000)).code, GrpcStatus.UNIMPLEMENTED);
    });
  });

  it('ends a call at its deadline', async () => {
    await withChannel({}, async (channel) => {
      const error = expectFailure(await channel.call('/test.Unary/Slow', Buffer.alloc(0), 300));
      assert.equal(error.code, GrpcStatus.DEADLINE_EXCEEDED);
      assert.match(error.details, /300 ms/);
    });
  });

  it('reports a refused connection', async () => {
    // A port that was free a moment ago.
    const probe = net.createServer();
    const freePort = await new Promise<number>((resolve) => probe.listen(0, '127.0.0.1', () => resolve((probe.address() as net.AddressInfo).port)));
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    await withChannel({ port: freePort }, async (channel) => {
      const error = expectFailure(await channel.call('/test.Unary/Echo', Buffer.alloc(0), 5_000));
      assert.equal(error.code, GrpcStatus.UNAVAILABLE);
      assert.match(error.details, /ECONNREFUSED/);
    });
  });

  it('rejects a wrong server identity', async () => {
    await withChannel({ checkServerIdentity: () => new Error('agent certificate does not carry the expected identity') }, async (channel) => {
      const error = expectFailure(await channel.call('/test.Unary/Echo', Buffer.alloc(0), 5_000));
      assert.equal(error.code, GrpcStatus.UNAVAILABLE);
      assert.match(error.details, /does not carry the expected identity/);
    });
  });

  it('reconnects after a closed connection', async () => {
    await withChannel({}, async (channel) => {
      expectMessage(await channel.call('/test.Unary/Echo', Buffer.from('a'), 5_000));
      const session = (channel as unknown as { session?: { destroy(): void } }).session;
      assert.ok(session !== undefined);
      session.destroy();
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(expectMessage(await channel.call('/test.Unary/Echo', Buffer.from('b'), 5_000)).toString(), 'echo:b');
    });
  });

  it('fails calls made after close', async () => {
    const channel = new UnaryChannel(target());
    channel.close();
    assert.equal(expectFailure(await channel.call('/test.Unary/Echo', Buffer.alloc(0), 5_000)).code, GrpcStatus.UNAVAILABLE);
  });
});
