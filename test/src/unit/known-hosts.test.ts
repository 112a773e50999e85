import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { after, before, describe, it } from 'mocha';

import {
  appendKnownHost,
  checkHostKey,
  entryMatches,
  fingerprintOf,
  knownHostsName,
  parseKnownHosts,
  readKnownHosts,
} from '@kubetrust/controller/dist/ssh/known-hosts';

interface TestKey {
  readonly type: string;
  readonly base64: string;
  readonly blob: Buffer;
  /** What `ssh-keygen -lf` prints for the public key file. */
  readonly fingerprint: string;
}

function generateKey(dir: string, name: string, type: string): TestKey {
  const file = path.join(dir, name);
  execFileSync('ssh-keygen', ['-q', '-t', type, '-N', '', '-C', name, '-f', file]);
  const [keyType, base64] = readFileSync(`${file}.pub`, 'utf8').trim().split(' ') as [string, string];
  const fingerprint = execFileSync('ssh-keygen', ['-lf', `${file}.pub`], { encoding: 'utf8' }).split(' ')[1]!;
  return { type: keyType, base64, blob: Buffer.from(base64, 'base64'), fingerprint };
}

function hashedName(name: string): string {
  const salt = randomBytes(20);
  const hash = createHmac('sha1', salt).update(name).digest();
  return `|1|${salt.toString('base64')}|${hash.toString('base64')}`;
}

describe('known_hosts', () => {
  let dir: string;
  let ed25519: TestKey;
  let ecdsa: TestKey;
  let other: TestKey;

  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'kubetrust-known-hosts-'));
    ed25519 = generateKey(dir, 'ed25519', 'ed25519');
    ecdsa = generateKey(dir, 'ecdsa', 'ecdsa');
    other = generateKey(dir, 'other', 'ed25519');
  });

  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  describe('fingerprints', () => {
    it('match ssh-keygen -lf', () => {
      assert.equal(fingerprintOf(ed25519.blob), ed25519.fingerprint);
      assert.equal(fingerprintOf(ecdsa.blob), ecdsa.fingerprint);
      assert.doesNotMatch(fingerprintOf(ed25519.blob), /=/);
    });
  });

  describe('parsing and lookup', () => {
    it('matches plain names and comma lists', () => {
      const entries = parseKnownHosts(`node-1.example,192.0.2.11 ${ed25519.type} ${ed25519.base64}\n`);

      assert.equal(entries.length, 1);
      assert.ok(entryMatches(entries[0]!, 'node-1.example', 22));
      assert.ok(entryMatches(entries[0]!, '192.0.2.11', 22));
      assert.ok(entryMatches(entries[0]!, 'NODE-1.example', 22));
      assert.ok(!entryMatches(entries[0]!, '192.0.2.12', 22));
    });

    it('uses [host]:port for other ports', () => {
      const entries = parseKnownHosts(`[192.0.2.11]:2222 ${ed25519.type} ${ed25519.base64}\n`);

      assert.equal(knownHostsName('192.0.2.11', 2222), '[192.0.2.11]:2222');
      assert.ok(entryMatches(entries[0]!, '192.0.2.11', 2222));
      assert.ok(!entryMatches(entries[0]!, '192.0.2.11', 22));
      assert.equal(checkHostKey(entries, '192.0.2.11', 22, ed25519.blob, undefined).status, 'unknown');
      assert.equal(checkHostKey(entries, '192.0.2.11', 2222, ed25519.blob, undefined).status, 'trusted');
    });

    it('matches hashed entries', () => {
      const text = [
        `${hashedName('192.0.2.11')} ${ed25519.type} ${ed25519.base64}`,
        `${hashedName('[192.0.2.12]:2200')} ${ecdsa.type} ${ecdsa.base64}`,
      ].join('\n');
      const entries = parseKnownHosts(text);

      assert.equal(entries.length, 2);
      assert.equal(checkHostKey(entries, '192.0.2.11', 22, ed25519.blob, undefined).status, 'trusted');
      assert.equal(checkHostKey(entries, '192.0.2.12', 2200, ecdsa.blob, undefined).status, 'trusted');
      assert.equal(checkHostKey(entries, '192.0.2.12', 22, ecdsa.blob, undefined).status, 'unknown');
    });

    it('reads a file hashed by ssh-keygen -H', () => {
      const file = path.join(dir, 'hashed_known_hosts');
      writeFileSync(file, `192.0.2.21 ${ed25519.type} ${ed25519.base64}\n[192.0.2.22]:2222 ${ecdsa.type} ${ecdsa.base64}\n`);
      execFileSync('ssh-keygen', ['-H', '-f', file], { stdio: 'ignore' });
      const entries = parseKnownHosts(readFileSync(file, 'utf8'));

      assert.ok(entries.every((entry) => entry.hosts.kind === 'hashed'));
      assert.equal(checkHostKey(entries, '192.0.2.21', 22, ed25519.blob, undefined).status, 'trusted');
      assert.equal(checkHostKey(entries, '192.0.2.22', 2222, ecdsa.blob, undefined).status, 'trusted');
    });

    it('honours wildcards and negation', () => {
      const entries = parseKnownHosts(`*.example,!bad.example ${ed25519.type} ${ed25519.base64}\n`);

      assert.ok(entryMatches(entries[0]!, 'node-1.example', 22));
      assert.ok(!entryMatches(entries[0]!, 'bad.example', 22));
    });

    it('skips comments, cert-authority and malformed lines', () => {
      const text = [
        '# a comment',
        '',
        `@cert-authority *.example ${ed25519.type} ${ed25519.base64}`,
        `192.0.2.11 ${ed25519.type}`,
        `192.0.2.11 ssh-rsa ${ed25519.base64}`,
        `192.0.2.11 ${ecdsa.type} ${ecdsa.base64}\r`,
      ].join('\n');
      const entries = parseKnownHosts(text);

      assert.equal(entries.length, 1);
      assert.equal(entries[0]!.line, 6);
      assert.equal(entries[0]!.keyType, ecdsa.type);
    });

    it('reports a changed key with the expected fingerprints', () => {
      const entries = parseKnownHosts(`# header\n192.0.2.11 ${ed25519.type} ${ed25519.base64}\n`);
      const check = checkHostKey(entries, '192.0.2.11', 22, other.blob, undefined);

      assert.equal(check.status, 'changed');
      assert.ok(check.status === 'changed');
      assert.deepEqual(check.expected, [ed25519.fingerprint]);
      assert.equal(check.line, 2);
    });

    it('treats a known host with another key type as changed', () => {
      const entries = parseKnownHosts(`192.0.2.11 ${ecdsa.type} ${ecdsa.base64}\n`);

      assert.equal(checkHostKey(entries, '192.0.2.11', 22, ed25519.blob, undefined).status, 'changed');
    });

    it('rejects a revoked key for any host', () => {
      const text = [`@revoked * ${other.type} ${other.base64}`, `192.0.2.11 ${other.type} ${other.base64}`].join('\n');
      const entries = parseKnownHosts(text);

      assert.deepEqual(checkHostKey(entries, '192.0.2.11', 22, other.blob, undefined), { status: 'revoked', line: 1 });
      assert.equal(checkHostKey(entries, '192.0.2.99', 22, other.blob, other.fingerprint).status, 'revoked');
    });

    it('lets a pinned fingerprint take precedence', () => {
      const entries = parseKnownHosts(`192.0.2.11 ${ed25519.type} ${ed25519.base64}\n`);

      const pinnedOther = checkHostKey(entries, '192.0.2.11', 22, other.blob, other.fingerprint);
      assert.deepEqual(pinnedOther, { status: 'trusted', source: 'pinned' });

      const pinnedMismatch = checkHostKey(entries, '192.0.2.11', 22, ed25519.blob, other.fingerprint);
      assert.equal(pinnedMismatch.status, 'changed');
      assert.ok(pinnedMismatch.status === 'changed');
      assert.deepEqual(pinnedMismatch.expected, [other.fingerprint]);
    });
  });

  describe('append', () => {
    it('keeps existing lines and adds the new entry', async () => {
      const file = path.join(dir, 'append', 'known_hosts');
      await appendKnownHost(file, '192.0.2.11', 22, ed25519.blob);
      const original = readFileSync(file, 'utf8');
      writeFileSync(file, `${original}# no newline at the end`);
      chmodSync(file, 0o644);

      await appendKnownHost(file, '192.0.2.12', 2222, ecdsa.blob);

      const lines = readFileSync(file, 'utf8').trimEnd().split('\n');
      assert.deepEqual(lines, [
        `192.0.2.11 ${ed25519.type} ${ed25519.base64}`,
        '# no newline at the end',
        `[192.0.2.12]:2222 ${ecdsa.type} ${ecdsa.base64}`,
      ]);
      assert.equal(statSync(file).mode & 0o777, 0o644);
      assert.deepEqual(readdirSync(path.dirname(file)), ['known_hosts']);
    });

    it('creates a new file with mode 0600', async () => {
      const file = path.join(dir, 'fresh', 'known_hosts');
      await appendKnownHost(file, 'node-1.example', 22, ed25519.blob);

      assert.equal(statSync(file).mode & 0o777, 0o600);
      assert.equal(statSync(path.dirname(file)).mode & 0o777, 0o700);
    });

    it('loses no entry under concurrent appends', async () => {
      const file = path.join(dir, 'concurrent', 'known_hosts');
      const hosts = Array.from({ length: 20 }, (_, index) => `192.0.2.${index + 1}`);

      await Promise.all(hosts.map((host) => appendKnownHost(file, host, 22, ed25519.blob)));

      const entries = await readKnownHosts(file);
      assert.equal(entries.length, hosts.length);
      for (const host of hosts) {
        assert.equal(checkHostKey(entries, host, 22, ed25519.blob, undefined).status, 'trusted', host);
      }
    });

    it('writes entries that ssh-keygen -F finds', async () => {
      const file = path.join(dir, 'lookup', 'known_hosts');
      await appendKnownHost(file, '192.0.2.31', 2022, ed25519.blob);

      const output = execFileSync('ssh-keygen', ['-F', '[192.0.2.31]:2022', '-f', file], { encoding: 'utf8' });
      assert.match(output, new RegExp(ed25519.base64.replace(/[+/]/g, '\\$&')));
    });
  });
});
