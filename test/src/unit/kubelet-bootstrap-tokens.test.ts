/**
 * Bootstrap tokens: format and randomness, the backing Secret, the bootstrap kubeconfig, redaction
 * of the token secret wherever a token is printed or logged, and issuing, listing and pruning
 * through the in-memory KubeClient.
 */
import { strict as assert } from 'node:assert';
import { Writable } from 'node:stream';
import * as util from 'node:util';
import * as winston from 'winston';
import {
  BOOTSTRAP_NAMESPACE,
  BOOTSTRAP_TOKEN_SECRET_TYPE,
  BootstrapToken,
  BootstrapTokenError,
  DEFAULT_TOKEN_TTL_MS,
  KubeApiError,
  bootstrapNodes,
  bootstrapSettings,
  defaultBootstrapGroup,
  issueNodeToken,
  listTokens,
  pruneTokens,
  readTokenSecret,
  renderBootstrapKubeconfig,
  tokenExpiration,
  tokenSecret,
  validateBootstrapGroup,
} from '@kubetrust/controller/dist/kubelet-bootstrap';
import { parseInventory, type Inventory, type NodeSpec } from '@kubetrust/shared/dist/inventory';
import { parseKubeconfig } from '@kubetrust/shared/dist/kubeconfig';
import { MemoryKubeClient } from '../harness/memory-kube-client';

const INVENTORY = `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: prod}
spec:
  apiServer: {endpoint: "https://192.0.2.100:6443"}
  kubelet: {credentials: bootstrap}
  nodes:
    - {name: cp-a, addresses: [192.0.2.11], roles: [etcd, master]}
    - {name: wk-a, addresses: [192.0.2.21], roles: [worker]}
    - {name: wk-b, addresses: [192.0.2.22], roles: [worker]}
    - {name: wk-c, addresses: [192.0.2.23], roles: [worker], kubelet: {credentials: pre-provisioned}}
`;

const CA_PEM = '-----BEGIN CERTIFICATE-----\nQ0E=\n-----END CERTIFICATE-----\n';
const NOW = new Date('2030-05-06T07:08:09.250Z');

function inventory(): Inventory {
  return parseInventory(INVENTORY, 'unit.yaml').inventory;
}

function node(inv: Inventory, name: string): NodeSpec {
  const found = inv.nodes.find((candidate) => candidate.name === name);
  assert.ok(found, `node ${name} in the test inventory`);
  return found;
}

const decode = (value: string | undefined): string => Buffer.from(value ?? '', 'base64').toString('utf8');

/** A winston logger in JSON format whose lines are collected in `lines`. */
function capturingLogger(): { logger: winston.Logger; lines: string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      lines.push(chunk.toString('utf8'));
      callback();
    },
  });
  const logger = winston.createLogger({ level: 'debug', format: winston.format.json(), transports: [new winston.transports.Stream({ stream })] });
  return { logger, lines };
}

describe('bootstrap token format', () => {
  it('generated token matches <id>.<secret>', () => {
    for (let i = 0; i < 200; i++) {
      const token = BootstrapToken.generate();
      assert.match(token.reveal(), /^[a-z0-9]{6}\.[a-z0-9]{16}$/);
      assert.match(token.id, /^[a-z0-9]{6}$/);
      assert.equal(token.username, `system:bootstrap:${token.id}`);
      assert.equal(token.secretName, `bootstrap-token-${token.id}`);
    }
  });

  it('generated tokens differ and use the whole alphabet', () => {
    const tokens = Array.from({ length: 2000 }, () => BootstrapToken.generate().reveal());
    assert.equal(new Set(tokens).size, tokens.length);
    const characters = new Set(tokens.join('').replace(/\./g, ''));
    assert.equal(characters.size, 36, `characters seen: ${[...characters].sort().join('')}`);
  });

  it('generation draws every character from the random source', () => {
    const draws: number[] = [];
    const token = BootstrapToken.generate((max) => {
      draws.push(max);
      return draws.length % max;
    });
    assert.equal(draws.length, 22);
    assert.ok(draws.every((max) => max === 36));
    assert.equal(token.id, 'bcdefg');
  });

  it('parse accepts a valid token and rejects others', () => {
    assert.equal(BootstrapToken.parse('abcdef.0123456789abcdef').id, 'abcdef');
    for (const text of ['abcdef0123456789abcdef', 'ABCDEF.0123456789abcdef', 'abcde.0123456789abcdef', 'abcdef.0123456789abcde', 'abcdef.0123456789abcdef\n']) {
      assert.throws(() => BootstrapToken.parse(text), BootstrapTokenError, text);
    }
  });

  it('equals compares id and secret', () => {
    const token = BootstrapToken.parse('abcdef.0123456789abcdef');
    assert.equal(token.equals(BootstrapToken.parse('abcdef.0123456789abcdef')), true);
    assert.equal(token.equals(BootstrapToken.parse('abcdef.0123456789abcdee')), false);
  });
});

describe('bootstrap token redaction', () => {
  const secret = '0123456789abcdef';
  const token = BootstrapToken.parse(`abcdef.${secret}`);

  it('String and template literals hide the secret', () => {
    assert.equal(String(token), 'abcdef.<redacted>');
    assert.equal(`${token}`, 'abcdef.<redacted>');
  });

  it('JSON.stringify hides the secret', () => {
    const text = JSON.stringify({ token, nested: [token] });
    assert.ok(!text.includes(secret), text);
    assert.ok(text.includes('abcdef.<redacted>'), text);
  });

  it('util.inspect hides the secret', () => {
    for (const text of [util.inspect(token), util.inspect({ token }, { depth: 5, showHidden: true }), util.format('%o', token)]) {
      assert.ok(!text.includes(secret), text);
    }
  });

  it('parse errors do not repeat the input', () => {
    const almost = `abcdef.${secret}X`;
    assert.throws(
      () => BootstrapToken.parse(almost),
      (error: Error) => !error.message.includes(secret) && !error.message.includes(almost),
    );
  });

  it('Secret object hides token-secret when printed', () => {
    const object = tokenSecret({ token, cluster: 'prod', node: 'wk-a', group: defaultBootstrapGroup('prod'), now: NOW });
    const encoded = Buffer.from(secret).toString('base64');
    assert.equal(object.data?.['token-secret'], encoded, 'the object itself carries the secret for the API');
    for (const text of [JSON.stringify(object), util.inspect(object, { depth: 10 }), util.inspect([object], { depth: 10 })]) {
      assert.ok(!text.includes(encoded) && !text.includes(secret), text);
      assert.ok(text.includes('<redacted>'), text);
    }
  });

  it('bootstrap kubeconfig hides the token when printed', () => {
    const inv = inventory();
    const kubeconfig = renderBootstrapKubeconfig({ inventory: inv, node: node(inv, 'wk-a'), clusterCaPem: CA_PEM, token, expiration: tokenExpiration(NOW, DEFAULT_TOKEN_TTL_MS), now: NOW });
    assert.ok(kubeconfig.reveal().includes(secret), 'the file content carries the token');
    for (const text of [String(kubeconfig), JSON.stringify(kubeconfig), util.inspect(kubeconfig)]) {
      assert.ok(!text.includes(secret), text);
    }
  });

  it('logs of token issue contain no secret', async () => {
    const { logger, lines } = capturingLogger();
    const inv = inventory();
    const client = new MemoryKubeClient();
    const issued = await issueNodeToken(client, { inventory: inv, node: node(inv, 'wk-a'), clusterCaPem: CA_PEM, settings: bootstrapSettings(inv), now: NOW, logger });
    const readBack = await client.getSecret('kube-system', issued.secretName);
    logger.info('issued', { token: issued.token, issued, secret: readBack, listed: await client.listSecrets('kube-system', '') });
    await new Promise((resolve) => setImmediate(resolve));
    const text = lines.join('');
    assert.ok(lines.length >= 2, text);
    assert.ok(text.includes(issued.token.id), text);
    assert.ok(!text.includes(issued.token.revealSecret()), text);
    assert.ok(!text.includes(Buffer.from(issued.token.revealSecret()).toString('base64')), text);
  });

  it('API errors during issue contain no secret', async () => {
    const inv = inventory();
    const client = new MemoryKubeClient();
    client.createSecret = async () => {
      throw new KubeApiError(403, 'Forbidden', 'create Secret kube-system/x failed: forbidden');
    };
    await assert.rejects(
      issueNodeToken(client, {
        inventory: inv,
        node: node(inv, 'wk-a'),
        clusterCaPem: CA_PEM,
        settings: bootstrapSettings(inv),
        now: NOW,
        // Every character is 'h', so the secret is sixteen of them.
        randomInt: (max) => 7 % max,
      }),
      (error: Error) => error instanceof KubeApiError && !error.message.includes('hhhhhhhhhhhhhhhh') && !util.inspect(error).includes('hhhhhhhhhhhhhhhh'),
    );
  });
});

describe('bootstrap token Secret', () => {
  const token = BootstrapToken.parse('abcdef.0123456789abcdef');

  it('has the fields the authenticator reads', () => {
    const secret = tokenSecret({ token, cluster: 'prod', node: 'wk-a', group: 'system:bootstrappers:kubetrust:prod', now: NOW });
    assert.equal(secret.metadata.name, 'bootstrap-token-abcdef');
    assert.equal(secret.metadata.namespace, 'kube-system');
    assert.equal(secret.type, 'bootstrap.kubernetes.io/token');
    assert.equal(decode(secret.data?.['token-id']), 'abcdef');
    assert.equal(decode(secret.data?.['token-secret']), '0123456789abcdef');
    assert.equal(decode(secret.data?.['usage-bootstrap-authentication']), 'true');
    assert.equal(decode(secret.data?.['auth-extra-groups']), 'system:bootstrappers:kubetrust:prod');
    assert.equal(decode(secret.data?.expiration), '2030-05-06T08:08:10Z');
    assert.match(decode(secret.data?.description), /wk-a/);
    assert.equal(secret.data?.['usage-bootstrap-signing'], undefined);
    assert.deepEqual(secret.metadata.labels, { 'kubetrust.io/managed-by': 'kubetrust', 'kubetrust.io/cluster': 'prod', 'kubetrust.io/node': 'wk-a' });
    assert.equal(secret.metadata.annotations?.['kubetrust.io/node'], 'wk-a');
  });

  it('expiration is now plus the lifetime, in RFC 3339 UTC', () => {
    const secret = tokenSecret({ token, cluster: 'prod', node: 'wk-a', group: defaultBootstrapGroup('prod'), now: NOW, ttlMs: 24 * 3600_000 });
    const expiration = decode(secret.data?.expiration);
    assert.match(expiration, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/);
    assert.equal(expiration, '2030-05-07T07:08:10Z');
  });

  it('expiration lies after now even for a one-millisecond lifetime', () => {
    const expiration = tokenExpiration(new Date('2030-01-01T00:00:00.000Z'), 1);
    assert.ok(expiration.getTime() > Date.parse('2030-01-01T00:00:00.000Z'));
  });

  it('default lifetime is one hour', () => {
    assert.equal(DEFAULT_TOKEN_TTL_MS, 3600_000);
    assert.equal(bootstrapSettings(inventory()).ttlMs, 3600_000);
  });

  it('reads back without decoding the secret', () => {
    const record = readTokenSecret(tokenSecret({ token, cluster: 'prod', node: 'wk-a', group: defaultBootstrapGroup('prod'), now: NOW }));
    assert.ok(record);
    assert.equal(record.tokenId, 'abcdef');
    assert.equal(record.node, 'wk-a');
    assert.equal(record.cluster, 'prod');
    assert.deepEqual(record.groups, ['system:bootstrappers:kubetrust:prod']);
    assert.equal(record.expiration?.toISOString(), '2030-05-06T08:08:10.000Z');
    assert.equal(record.usageBootstrapAuthentication, true);
    assert.ok(!JSON.stringify(record).includes('0123456789abcdef'));
  });

  it('node names too long for a label stay in the annotation', () => {
    const long = `${'n'.repeat(60)}.example.com`;
    const secret = tokenSecret({ token, cluster: 'prod', node: long, group: defaultBootstrapGroup('prod'), now: NOW });
    assert.equal(secret.metadata.labels?.['kubetrust.io/node'], undefined);
    assert.equal(readTokenSecret(secret)?.node, long);
  });
});

describe('bootstrap group and lifetime checks', () => {
  it('default group matches the authenticator pattern', () => {
    assert.equal(defaultBootstrapGroup('prod'), 'system:bootstrappers:kubetrust:prod');
    assert.match(defaultBootstrapGroup('prod'), /^system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]$/);
  });

  it('groups outside system:bootstrappers: are rejected', () => {
    for (const group of ['system:bootstrappers', 'system:bootstrappers:', 'system:nodes', 'system:bootstrappers:Prod', 'system:bootstrappers:prod-', `system:bootstrappers:${'a'.repeat(257)}`]) {
      assert.throws(() => validateBootstrapGroup(group), BootstrapTokenError, group);
    }
    assert.equal(validateBootstrapGroup('system:bootstrappers:cluster-nodes'), 'system:bootstrappers:cluster-nodes');
  });

  it('non-positive lifetimes are rejected', () => {
    const token = BootstrapToken.generate();
    for (const ttlMs of [0, -1, -3600_000, Number.NaN, Number.POSITIVE_INFINITY]) {
      assert.throws(() => tokenSecret({ token, cluster: 'prod', node: 'wk-a', group: defaultBootstrapGroup('prod'), now: NOW, ttlMs }), BootstrapTokenError, String(ttlMs));
      assert.throws(() => bootstrapSettings(inventory(), { ttlMs }), BootstrapTokenError, String(ttlMs));
    }
  });
});

describe('bootstrap kubeconfig', () => {
  it('points at the kubelet.conf server with the CA and token', () => {
    const inv = inventory();
    const token = BootstrapToken.parse('abcdef.0123456789abcdef');
    const kubeconfig = renderBootstrapKubeconfig({ inventory: inv, node: node(inv, 'wk-a'), clusterCaPem: CA_PEM, token, expiration: tokenExpiration(NOW, 3600_000), now: NOW });
    const parsed = parseKubeconfig(kubeconfig.reveal());
    assert.equal(parsed.server, 'https://192.0.2.100:6443');
    assert.equal(parsed.certificateAuthorityPem, CA_PEM);
    assert.equal(parsed.token, 'abcdef.0123456789abcdef');
    assert.equal(parsed.clientCertificatePem, '');
    assert.equal(kubeconfig.server, 'https://192.0.2.100:6443');
  });
});

describe('bootstrapping workers never file a CSR', () => {
  it('issued Secret expires strictly after the issue time', async () => {
    const inv = inventory();
    const client = new MemoryKubeClient();
    const issued = await issueNodeToken(client, { inventory: inv, node: node(inv, 'wk-a'), clusterCaPem: CA_PEM, settings: bootstrapSettings(inv, { ttlMs: 24 * 3600_000 }), now: NOW });
    const stored = client.secrets.get(`${BOOTSTRAP_NAMESPACE}/${issued.secretName}`);
    assert.ok(stored);
    assert.equal(stored.type, BOOTSTRAP_TOKEN_SECRET_TYPE);
    const expiration = Date.parse(decode(stored.data?.expiration));
    assert.ok(expiration > NOW.getTime());
    assert.equal(expiration, Math.ceil((NOW.getTime() + 24 * 3600_000) / 1000) * 1000);
    assert.match(decode(stored.data?.['token-id']), /^[a-z0-9]{6}$/);
    assert.match(decode(stored.data?.['token-secret']), /^[a-z0-9]{16}$/);
  });

  it('kubeconfig with an expired token is refused, naming the token id', () => {
    const inv = inventory();
    const token = BootstrapToken.parse('abcdef.0123456789abcdef');
    assert.throws(
      () => renderBootstrapKubeconfig({ inventory: inv, node: node(inv, 'wk-a'), clusterCaPem: CA_PEM, token, expiration: new Date(NOW.getTime() - 86_400_000), now: NOW }),
      (error: Error) => error instanceof BootstrapTokenError && error.message.includes('abcdef') && !error.message.includes('0123456789abcdef'),
    );
  });

  it('every issue mints a fresh token', async () => {
    const inv = inventory();
    const client = new MemoryKubeClient();
    const first = await issueNodeToken(client, { inventory: inv, node: node(inv, 'wk-a'), clusterCaPem: CA_PEM, settings: bootstrapSettings(inv), now: NOW });
    const second = await issueNodeToken(client, { inventory: inv, node: node(inv, 'wk-a'), clusterCaPem: CA_PEM, settings: bootstrapSettings(inv), now: NOW });
    assert.notEqual(first.token.id, second.token.id);
    assert.equal(client.secrets.size, 2);
  });
});

describe('bootstrap token issue, list and prune', () => {
  it('only bootstrapping workers get tokens', async () => {
    const inv = inventory();
    assert.deepEqual(bootstrapNodes(inv).map((candidate) => candidate.name), ['wk-a', 'wk-b']);
    await assert.rejects(
      issueNodeToken(new MemoryKubeClient(), { inventory: inv, node: node(inv, 'wk-c'), clusterCaPem: CA_PEM, settings: bootstrapSettings(inv), now: NOW }),
      BootstrapTokenError,
    );
  });

  it('token id collision draws a new id', async () => {
    const inv = inventory();
    const client = new MemoryKubeClient();
    let draw = 0;
    // The first two tokens are identical, so the second create gets 409 and a third token is drawn.
    const randomInt = (max: number): number => (draw++ < 44 ? 0 : (draw * 7) % max);
    await issueNodeToken(client, { inventory: inv, node: node(inv, 'wk-a'), clusterCaPem: CA_PEM, settings: bootstrapSettings(inv), now: NOW, randomInt });
    const issued = await issueNodeToken(client, { inventory: inv, node: node(inv, 'wk-b'), clusterCaPem: CA_PEM, settings: bootstrapSettings(inv), now: NOW, randomInt });
    assert.notEqual(issued.token.id, 'aaaaaa');
    assert.equal(client.calls.filter((call) => call.startsWith('createSecret')).length, 3);
  });

  it('list shows only this cluster\'s kubetrust tokens', async () => {
    const inv = inventory();
    const client = new MemoryKubeClient();
    await issueNodeToken(client, { inventory: inv, node: node(inv, 'wk-a'), clusterCaPem: CA_PEM, settings: bootstrapSettings(inv), now: NOW });
    const foreign = tokenSecret({ token: BootstrapToken.generate(), cluster: 'other', node: 'wk-a', group: defaultBootstrapGroup('other'), now: NOW });
    await client.createSecret(foreign);
    await client.createSecret({ metadata: { name: 'bootstrap-token-kubead', namespace: 'kube-system' }, type: BOOTSTRAP_TOKEN_SECRET_TYPE, data: {} });
    const listings = await listTokens(client, inv, NOW);
    assert.equal(listings.length, 1);
    assert.equal(listings[0]?.node, 'wk-a');
    assert.equal(listings[0]?.state, 'valid');
    assert.equal(listings[0]?.nodeBootstraps, true);
  });

  it('list marks expiring and expired tokens', async () => {
    const inv = inventory();
    const client = new MemoryKubeClient();
    await issueNodeToken(client, { inventory: inv, node: node(inv, 'wk-a'), clusterCaPem: CA_PEM, settings: bootstrapSettings(inv), now: NOW });
    const states = async (minutes: number): Promise<string | undefined> => (await listTokens(client, inv, new Date(NOW.getTime() + minutes * 60_000)))[0]?.state;
    assert.equal(await states(0), 'valid');
    assert.equal(await states(50), 'expiring');
    assert.equal(await states(61), 'expired');
  });

  it('prune deletes expired, registered and unknown nodes\' tokens only', async () => {
    const inv = inventory();
    const client = new MemoryKubeClient();
    const settings = bootstrapSettings(inv);
    const expired = await issueNodeToken(client, { inventory: inv, node: node(inv, 'wk-a'), clusterCaPem: CA_PEM, settings, now: new Date(NOW.getTime() - 2 * 3600_000) });
    const registered = await issueNodeToken(client, { inventory: inv, node: node(inv, 'wk-a'), clusterCaPem: CA_PEM, settings, now: NOW });
    const waiting = await issueNodeToken(client, { inventory: inv, node: node(inv, 'wk-b'), clusterCaPem: CA_PEM, settings, now: NOW });
    const removedNode = tokenSecret({ token: BootstrapToken.generate(), cluster: 'prod', node: 'wk-old', group: settings.group, now: NOW });
    await client.createSecret(removedNode);
    client.addNode('wk-a');

    const dryRun = await pruneTokens(client, inv, NOW, { dryRun: true });
    assert.equal(client.secrets.size, 4);
    assert.ok(dryRun.every((result) => !result.deleted));

    const results = await pruneTokens(client, inv, NOW);
    const reasonOf = (secretName: string): string | undefined => results.find((result) => result.secretName === secretName)?.reason;
    assert.equal(reasonOf(expired.secretName), 'expired');
    assert.equal(reasonOf(registered.secretName), 'node registered');
    assert.equal(reasonOf(removedNode.metadata.name), 'node not bootstrapping');
    assert.equal(reasonOf(waiting.secretName), undefined);
    assert.deepEqual([...client.secrets.keys()], [`kube-system/${waiting.secretName}`]);
  });
});
