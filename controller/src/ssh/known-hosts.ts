/**
 * OpenSSH known_hosts files (the format of sshd(8), section SSH_KNOWN_HOSTS FILE FORMAT): lookup
 * of a host and port, SHA-256 fingerprints as `ssh-keygen -lf` prints them, and atomic appends
 * for `--accept-new`.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';

/** One usable line of a known_hosts file. `@cert-authority` lines and comments are skipped. */
export interface KnownHostEntry {
  /** 1-based line number in the file, for messages. */
  readonly line: number;
  readonly revoked: boolean;
  readonly hosts: HostMatcher;
  /** Key type as the line names it, such as `ssh-ed25519`. */
  readonly keyType: string;
  /** The public key blob in SSH wire format, as the server sends it. */
  readonly key: Buffer;
}

type HostMatcher =
  | { readonly kind: 'hashed'; readonly salt: Buffer; readonly hash: Buffer }
  | { readonly kind: 'patterns'; readonly patterns: readonly string[] };

/** Parses the text of a known_hosts file. Malformed lines are skipped as OpenSSH skips them. */
export function parseKnownHosts(text: string): KnownHostEntry[] {
  const entries: KnownHostEntry[] = [];
  text.split('\n').forEach((rawLine, index) => {
    const entry = parseLine(rawLine.replace(/\r$/, ''), index + 1);
    if (entry !== undefined) {
      entries.push(entry);
    }
  });
  return entries;
}

function parseLine(text: string, line: number): KnownHostEntry | undefined {
  const trimmed = text.trim();
  if (trimmed === '' || trimmed.startsWith('#')) {
    return undefined;
  }

  const fields = trimmed.split(/[ \t]+/);
  let revoked = false;
  if (fields[0]?.startsWith('@')) {
    const marker = fields.shift();
    if (marker !== '@revoked') {
      // @cert-authority lines trust a CA for host certificates, which this client does not use.
      return undefined;
    }
    revoked = true;
  }

  const [hostField, keyType, keyText] = fields;
  if (hostField === undefined || keyType === undefined || keyText === undefined) {
    return undefined;
  }
  const hosts = parseHostField(hostField);
  const key = Buffer.from(keyText, 'base64');
  if (hosts === undefined || key.length === 0 || keyTypeOf(key) !== keyType) {
    return undefined;
  }
  return { line, revoked, hosts, keyType, key };
}

function parseHostField(field: string): HostMatcher | undefined {
  if (field.startsWith('|1|')) {
    const [salt, hash] = field.slice(3).split('|');
    if (salt === undefined || hash === undefined) {
      return undefined;
    }
    return { kind: 'hashed', salt: Buffer.from(salt, 'base64'), hash: Buffer.from(hash, 'base64') };
  }
  if (field.startsWith('|')) {
    return undefined;
  }
  return { kind: 'patterns', patterns: field.split(',').filter((pattern) => pattern !== '') };
}

/** Returns the name under which OpenSSH stores a host: `host` on port 22, `[host]:port` on any other port. */
export function knownHostsName(host: string, port: number): string {
  const lower = host.toLowerCase();
  return port === 22 ? lower : `[${lower}]:${port}`;
}

/**
 * Returns true when the entry's host field matches the host and port. A hashed field is the
 * base64 HMAC-SHA1 of the name, keyed with the salt. In a pattern list, `*` and `?` are
 * wildcards, and a matching `!pattern` excludes the host even when another pattern matches.
 */
export function entryMatches(entry: KnownHostEntry, host: string, port: number): boolean {
  const name = knownHostsName(host, port);
  const hosts = entry.hosts;
  if (hosts.kind === 'hashed') {
    const digest = createHmac('sha1', hosts.salt).update(name).digest();
    return digest.length === hosts.hash.length && timingSafeEqual(digest, hosts.hash);
  }

  let matched = false;
  for (const pattern of hosts.patterns) {
    const negated = pattern.startsWith('!');
    if (!wildcardMatch(negated ? pattern.slice(1) : pattern, name)) {
      continue;
    }
    if (negated) {
      return false;
    }
    matched = true;
  }
  return matched;
}

function wildcardMatch(pattern: string, name: string): boolean {
  let source = '';
  for (const char of pattern.toLowerCase()) {
    if (char === '*') {
      source += '.*';
    } else if (char === '?') {
      source += '.';
    } else {
      source += char.replace(/[\\^$.+()|{}[\]]/g, '\\$&');
    }
  }
  return new RegExp(`^${source}$`).test(name);
}

/** Returns the key type that an SSH public key blob starts with, such as `ssh-ed25519`. */
export function keyTypeOf(key: Buffer): string | undefined {
  if (key.length < 4) {
    return undefined;
  }
  const length = key.readUInt32BE(0);
  if (length === 0 || length > 64 || 4 + length > key.length) {
    return undefined;
  }
  return key.subarray(4, 4 + length).toString('latin1');
}

/** Returns the fingerprint as `ssh-keygen -lf` prints it: `SHA256:` and the unpadded base64 digest. */
export function fingerprintOf(key: Buffer): string {
  return `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}`;
}

/** The result of checking a server's host key. */
export type HostKeyCheck =
  | { readonly status: 'trusted'; readonly source: 'pinned' | 'known-hosts' }
  | { readonly status: 'unknown' }
  | { readonly status: 'revoked'; readonly line: number }
  | {
      readonly status: 'changed';
      readonly source: 'pinned' | 'known-hosts';
      /** Fingerprints that the inventory or the file expects for this host. */
      readonly expected: readonly string[];
      /** Line of the first entry for this host, for the fix; undefined for a pinned key. */
      readonly line: number | undefined;
    };

/**
 * Checks a host key. A key on an `@revoked` line fails for every host. A pinned fingerprint then
 * decides alone. Otherwise the entries for the host decide: the same key is trusted, no entry is
 * unknown, and any other key, of the same type or not, counts as changed.
 */
export function checkHostKey(
  entries: readonly KnownHostEntry[],
  host: string,
  port: number,
  key: Buffer,
  pinnedFingerprint: string | undefined,
): HostKeyCheck {
  const revoked = entries.find((entry) => entry.revoked && entry.key.equals(key));
  if (revoked !== undefined) {
    return { status: 'revoked', line: revoked.line };
  }

  if (pinnedFingerprint !== undefined) {
    return fingerprintOf(key) === pinnedFingerprint
      ? { status: 'trusted', source: 'pinned' }
      : { status: 'changed', source: 'pinned', expected: [pinnedFingerprint], line: undefined };
  }

  const known = entries.filter((entry) => !entry.revoked && entryMatches(entry, host, port));
  if (known.some((entry) => entry.key.equals(key))) {
    return { status: 'trusted', source: 'known-hosts' };
  }
  if (known.length === 0) {
    return { status: 'unknown' };
  }
  return {
    status: 'changed',
    source: 'known-hosts',
    expected: [...new Set(known.map((entry) => fingerprintOf(entry.key)))],
    line: known[0]!.line,
  };
}

/** Returns the key types that the file stores for a host, for ordering the host key algorithms. */
export function knownKeyTypes(entries: readonly KnownHostEntry[], host: string, port: number): string[] {
  const types = entries.filter((entry) => !entry.revoked && entryMatches(entry, host, port)).map((entry) => entry.keyType);
  return [...new Set(types)];
}

/** Reads and parses a known_hosts file. A missing file has no entries. */
export async function readKnownHosts(file: string): Promise<KnownHostEntry[]> {
  try {
    return parseKnownHosts(await fs.readFile(file, 'utf8'));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      return [];
    }
    throw error;
  }
}

/** Pending appends per file, so that concurrent sessions of one process never lose each other's lines. */
const appendQueues = new Map<string, Promise<void>>();

/**
 * Appends `name keytype base64` for the host to the file. The new content goes to a temporary
 * file beside it that is fsynced and renamed over the old one, so a crash leaves the old or the
 * new file. The directory is created with mode 0700 and a new file gets mode 0600.
 * NOTE: appends are serialised within this process only; two controllers that append to one
 * file at the same moment can still lose a line.
 */
export function appendKnownHost(file: string, host: string, port: number, key: Buffer): Promise<void> {
  const previous = appendQueues.get(file) ?? Promise.resolve();
  const next = previous.catch(() => undefined).then(() => appendNow(file, host, port, key));
  appendQueues.set(file, next);
  void next.finally(() => {
    if (appendQueues.get(file) === next) {
      appendQueues.delete(file);
    }
  }).catch(() => undefined);
  return next;
}

async function appendNow(file: string, host: string, port: number, key: Buffer): Promise<void> {
  const keyType = keyTypeOf(key);
  if (keyType === undefined) {
    throw new Error(`cannot record a host key for ${host}:${port} in ${file}: the key has no valid type`);
  }

  const directory = path.dirname(file);
  await fs.mkdir(directory, { recursive: true, mode: 0o700 });

  let existing = '';
  let mode = 0o600;
  try {
    existing = await fs.readFile(file, 'utf8');
    mode = (await fs.stat(file)).mode & 0o777;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw error;
    }
  }

  const separator = existing === '' || existing.endsWith('\n') ? '' : '\n';
  const content = `${existing}${separator}${knownHostsName(host, port)} ${keyType} ${key.toString('base64')}\n`;
  const temporary = path.join(directory, `.${path.basename(file)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    const handle = await fs.open(temporary, 'wx', mode);
    try {
      await handle.writeFile(content);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.rename(temporary, file);
  } catch (error) {
    await fs.rm(temporary, { force: true });
    throw error;
  }

  const directoryHandle = await fs.open(directory, 'r');
  try {
    await directoryHandle.sync();
  } finally {
    await directoryHandle.close();
  }
}
