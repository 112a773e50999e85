/**
 * SSH sessions against real OpenSSH servers, each in a network namespace that the harness
 * creates (`test/src/harness/ssh-nodes.ts`). Needs root, iproute2, openssh-server and sudo.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';

import { after, afterEach, before, describe, it } from 'mocha';
import * as winston from 'winston';

import { openSession, SshError, type OpenOptions, type SshSession, type SshStep } from '@kubetrust/controller/dist/ssh/session';
import { parseInventory, type SshSettings } from '@kubetrust/shared/dist/inventory';
import { silentLogger } from '@kubetrust/shared/dist/log';

import { NO_SUDO_USER, SshNodes, type SshNode } from '../harness/ssh-nodes';

const QUIET: OpenOptions = { acceptNew: false, logger: silentLogger() };
const ACCEPT_NEW: OpenOptions = { acceptNew: true, logger: silentLogger() };

async function expectSshError(promise: Promise<unknown>, step: SshStep): Promise<SshError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof SshError, `expected an SshError, got ${String(error)}`);
    assert.equal(error.step, step, error.message);
    assert.doesNotMatch(error.message, /\n/);
    return error;
  }
  assert.fail(`expected SshError('${step}')`);
}

describe('ssh sessions on namespaced sshd nodes', function () {
  this.timeout(120_000);

  let nodes: SshNodes;
  let sessions: SshSession[] = [];
  let fileCounter = 0;

  /** Returns a fresh known_hosts path for one test. */
  function knownHostsFile(): string {
    fileCounter += 1;
    return path.join(nodes.dir, 'admin', `known_hosts-${fileCounter}`);
  }

  function knownHostsWith(...entries: readonly SshNode[]): string {
    const file = knownHostsFile();
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, entries.map((node) => `${node.address} ${node.hostPublicKey}\n`).join(''));
    return file;
  }

  function settingsFor(node: SshNode, overrides: Partial<SshSettings> = {}): SshSettings {
    return {
      host: node.address,
      port: node.port,
      user: 'root',
      privateKeyFile: nodes.clientKeyFile,
      passphraseEnv: undefined,
      agent: false,
      agentSocket: undefined,
      jumpHost: undefined,
      sudo: false,
      knownHostsFile: knownHostsFile(),
      hostKeyFingerprint: undefined,
      ...overrides,
    };
  }

  async function open(name: string, settings: SshSettings, options: OpenOptions = QUIET): Promise<SshSession> {
    const session = await openSession(name, settings, options);
    sessions.push(session);
    return session;
  }

  before(async () => {
    nodes = await SshNodes.start({ count: 3, silentCount: 1, links: [[0, 1]] });
  });

  afterEach(() => {
    for (const session of sessions) {
      session.close();
    }
    sessions = [];
  });

  after(async () => {
    await nodes?.stop();
  });

  it('runs commands on three nodes from inventory settings', async () => {
    const [first, second, third] = [nodes.node(0), nodes.node(1), nodes.node(2)];
    const knownHosts = knownHostsWith(first, second, third);
    const yaml = `
apiVersion: kubetrust/v1
kind: Cluster
metadata: {name: ssh-test}
spec:
  apiServer: {endpoint: "https://${first.address}:6443"}
  ssh: {privateKeyFile: ${nodes.clientKeyFile}, knownHostsFile: ${knownHosts}}
  nodes:
${[first, second, third]
  .map((node, index) => `    - {name: node-${index}, addresses: [${node.address}], roles: [etcd, master], agent: {prefix: ${node.prefix}}}`)
  .join('\n')}
`;
    const { inventory } = parseInventory(yaml, 'ssh-test.yaml', { env: {} });

    for (const [index, spec] of inventory.nodes.entries()) {
      const node = nodes.node(index);
      assert.equal(spec.agent.prefix, node.prefix);
      const session = await open(spec.name, spec.ssh);

      assert.equal(session.hostKeyFingerprint, node.hostKeyFingerprint);
      const addresses = await session.run('ip -o -4 addr show');
      assert.equal(addresses.code, 0, addresses.stderr);
      assert.match(addresses.stdout, new RegExp(`inet ${node.address.replace(/\./g, '\\.')}/30`));
      const whoami = await session.run('id -un');
      assert.equal(whoami.stdout.trim(), 'root');
    }
  });

  it('passes stdin and returns exit codes', async () => {
    const node = nodes.node(0);
    const session = await open('node-0', settingsFor(node, { knownHostsFile: knownHostsWith(node) }));

    const echoed = await session.run('cat; echo " to stderr" >&2', { stdin: 'from stdin' });
    assert.equal(echoed.code, 0);
    assert.equal(echoed.stdout, 'from stdin');
    assert.equal(echoed.stderr, ' to stderr\n');

    const failed = await session.run('exit 7');
    assert.equal(failed.code, 7);
  });

  it('stops a command at its timeout', async () => {
    const node = nodes.node(0);
    const session = await open('node-0', settingsFor(node, { knownHostsFile: knownHostsWith(node) }));

    const started = Date.now();
    const error = await expectSshError(session.run('sleep 5', { timeoutMs: 500 }), 'command');
    assert.match(error.message, /did not finish within 0\.5 s/);
    assert.ok(Date.now() - started < 4_000, `the timeout took ${Date.now() - started} ms`);
  });

  it('uploads a file with its mode and checksum', async () => {
    const node = nodes.node(1);
    const session = await open('node-1', settingsFor(node, { knownHostsFile: knownHostsWith(node) }));
    const target = path.join(node.prefix, 'usr/local/bin/kubetrust-agent');
    const data = randomBytes(1024 * 1024 + 17);

    await session.upload(data, target, 0o750);

    assert.ok(readFileSync(target).equals(data));
    assert.equal(statSync(target).mode & 0o7777, 0o750);
    assert.deepEqual(readdirSync(path.dirname(target)), ['kubetrust-agent']);

    const replacement = Buffer.from('#!/bin/sh\necho replaced\n');
    await session.upload(replacement, target, 0o755);
    assert.ok(readFileSync(target).equals(replacement));
    assert.equal(statSync(target).mode & 0o7777, 0o755);
    assert.deepEqual(readdirSync(path.dirname(target)), ['kubetrust-agent']);
  });

  it('reports a full disk on upload and leaves no temporary file', async () => {
    const node = nodes.node(1);
    const mountPoint = path.join(node.prefix, 'small');
    mkdirSync(mountPoint, { recursive: true });
    await nodes.inNodeMounts(1, 'mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', mountPoint]);
    try {
      const session = await open('node-1', settingsFor(node, { knownHostsFile: knownHostsWith(node) }));

      const error = await expectSshError(session.upload(randomBytes(1024 * 1024), path.join(mountPoint, 'big'), 0o644), 'upload');

      assert.match(error.message, /no space left/);
      const left = await session.run(`ls -A ${mountPoint}`);
      assert.equal(left.stdout, '');
      assert.match(await nodes.inNodeMounts(1, 'df', ['-P', mountPoint]), /tmpfs/);
    } finally {
      await nodes.inNodeMounts(1, 'umount', [mountPoint]);
    }
  });

  it('rejects a key the node does not accept', async () => {
    const node = nodes.node(0);
    const settings = settingsFor(node, { privateKeyFile: nodes.otherKeyFile, knownHostsFile: knownHostsWith(node) });

    const error = await expectSshError(open('node-0', settings), 'auth');

    assert.match(error.message, /^node-0: /);
    assert.match(error.message, /user "root"/);
    assert.ok(error.message.includes(nodes.otherKeyFile), error.message);
  });

  it('rejects a user that does not exist', async () => {
    const node = nodes.node(0);
    const settings = settingsFor(node, { user: 'no-such-user', knownHostsFile: knownHostsWith(node) });

    const error = await expectSshError(open('node-0', settings), 'auth');

    assert.match(error.message, /user "no-such-user"/);
  });

  it('decrypts a key with the passphrase from passphraseEnv', async () => {
    const node = nodes.node(2);
    const keyFile = path.join(nodes.dir, 'encrypted_ed25519');
    if (!existsSync(keyFile)) {
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', 'correct horse', '-C', 'encrypted', '-f', keyFile]);
      appendFileSync(path.join(node.dir, 'authorized_keys'), readFileSync(`${keyFile}.pub`));
    }
    const logged: string[] = [];
    const logger = winston.createLogger({
      level: 'debug',
      transports: [new winston.transports.Stream({ stream: new Writable({ write: (chunk, _encoding, done) => { logged.push(String(chunk)); done(); } }) })],
    });
    const settings = settingsFor(node, { privateKeyFile: keyFile, passphraseEnv: 'KUBETRUST_TEST_PASSPHRASE', knownHostsFile: knownHostsWith(node) });

    process.env['KUBETRUST_TEST_PASSPHRASE'] = 'wrong';
    try {
      const wrong = await expectSshError(open('node-2', settings, { acceptNew: false, logger }), 'auth');
      assert.match(wrong.message, /KUBETRUST_TEST_PASSPHRASE does not decrypt/);
      assert.doesNotMatch(wrong.message, /wrong/);

      process.env['KUBETRUST_TEST_PASSPHRASE'] = 'correct horse';
      const session = await open('node-2', settings, { acceptNew: false, logger });
      assert.equal((await session.run('true')).code, 0);
    } finally {
      delete process.env['KUBETRUST_TEST_PASSPHRASE'];
    }

    const log = logged.join('');
    assert.match(log, /SSH session opened/);
    assert.doesNotMatch(log, /correct horse|PRIVATE KEY/);
  });

  it('rejects an unknown host unless accept-new records it', async () => {
    const node = nodes.node(2);
    const settings = settingsFor(node);

    const error = await expectSshError(open('node-2', settings), 'host-key');
    assert.ok(error.message.includes(node.hostKeyFingerprint), error.message);
    assert.ok(!existsSync(settings.knownHostsFile));

    const session = await open('node-2', settings, ACCEPT_NEW);
    assert.equal(session.hostKeyFingerprint, node.hostKeyFingerprint);
    const recorded = readFileSync(settings.knownHostsFile, 'utf8');
    assert.equal(recorded, `${node.address} ${node.hostPublicKey.split(' ').slice(0, 2).join(' ')}\n`);

    const again = await open('node-2', settings);
    assert.equal(again.hostKeyFingerprint, node.hostKeyFingerprint);
  });

  it('rejects a changed host key with both fingerprints', async () => {
    const node = nodes.node(2);
    const settings = settingsFor(node);
    await open('node-2', settings, ACCEPT_NEW);
    const oldFingerprint = node.hostKeyFingerprint;
    const before = readFileSync(settings.knownHostsFile, 'utf8');

    await nodes.replaceHostKey(2);
    const error = await expectSshError(open('node-2', settings, ACCEPT_NEW), 'host-key');

    assert.notEqual(node.hostKeyFingerprint, oldFingerprint);
    assert.ok(error.message.includes(oldFingerprint), error.message);
    assert.ok(error.message.includes(node.hostKeyFingerprint), error.message);
    assert.match(error.message, /changed/);
    assert.equal(readFileSync(settings.knownHostsFile, 'utf8'), before);
  });

  it('checks a pinned fingerprint before the known hosts file', async () => {
    const node = nodes.node(0);
    const other = nodes.node(1);

    const pinned = await open('node-0', settingsFor(node, { hostKeyFingerprint: node.hostKeyFingerprint }));
    assert.equal(pinned.hostKeyFingerprint, node.hostKeyFingerprint);

    const settings = settingsFor(node, { hostKeyFingerprint: other.hostKeyFingerprint, knownHostsFile: knownHostsWith(node) });
    const error = await expectSshError(open('node-0', settings, ACCEPT_NEW), 'host-key');
    assert.ok(error.message.includes(other.hostKeyFingerprint), error.message);
    assert.ok(error.message.includes(node.hostKeyFingerprint), error.message);
  });

  it('rejects a revoked host key even with accept-new', async () => {
    const node = nodes.node(0);
    const file = knownHostsFile();
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, `@revoked * ${node.hostPublicKey}\n`);

    const error = await expectSshError(open('node-0', settingsFor(node, { knownHostsFile: file }), ACCEPT_NEW), 'host-key');

    assert.match(error.message, /@revoked/);
  });

  it('fails with the sudo message for a user without sudo rights', async () => {
    const node = nodes.node(0);
    const settings = settingsFor(node, { user: NO_SUDO_USER, sudo: true, knownHostsFile: knownHostsWith(node) });
    const session = await open('node-0', settings);

    const plain = await session.run('id -un', { sudo: false });
    assert.equal(plain.stdout.trim(), NO_SUDO_USER);

    const error = await expectSshError(session.run('id -un'), 'sudo');
    assert.ok(error.message.includes(`"${NO_SUDO_USER}"`), error.message);
    assert.match(error.message, /NOPASSWD|sudoers/);

    const upload = await expectSshError(session.upload(Buffer.from('x'), path.join(node.prefix, 'etc/denied'), 0o644), 'sudo');
    assert.equal(upload.message, error.message);
    assert.ok(!existsSync(path.join(node.prefix, 'etc/denied')));
  });

  it('reports a refused connection where nothing listens', async () => {
    const silent = nodes.node(3);
    assert.equal(silent.runsSshd, false);

    const error = await expectSshError(open('silent', settingsFor(silent)), 'connect');

    assert.match(error.message, /refused/);
    assert.ok(error.message.includes(silent.address), error.message);
  });

  it('reaches a node through a jump host', async () => {
    const jump = nodes.node(0);
    const target = nodes.node(1);
    const link = nodes.links[0]!;
    const targetAddress = link.addresses[1];
    const settings = settingsFor(target, {
      host: targetAddress,
      jumpHost: { host: jump.address, port: jump.port, user: 'root', privateKeyFile: nodes.clientKeyFile },
    });

    const error = await expectSshError(open('node-1', settings), 'host-key');
    assert.match(error.message, /jump host/);
    assert.ok(error.message.includes(jump.hostKeyFingerprint), error.message);

    const session = await open('node-1', settings, ACCEPT_NEW);
    assert.equal(session.hostKeyFingerprint, target.hostKeyFingerprint);
    const addresses = await session.run('ip -o -4 addr show');
    assert.match(addresses.stdout, new RegExp(`inet ${targetAddress.replace(/\./g, '\\.')}/30`));
    assert.match(addresses.stdout, new RegExp(`inet ${target.address.replace(/\./g, '\\.')}/30`));

    const recorded = readFileSync(settings.knownHostsFile, 'utf8');
    assert.ok(recorded.includes(`${jump.address} ssh-ed25519 `), recorded);
    assert.ok(recorded.includes(`${targetAddress} ssh-ed25519 `), recorded);
  });
});
