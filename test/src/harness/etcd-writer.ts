/**
 * A client that keeps writing to a real etcd cluster through its HTTP gateway while a rollout
 * changes the members' certificates: one key every 50 ms, each write sent to the first member that
 * takes it, as an etcd client with several endpoints does. It records every acknowledged write
 * and every write that no member took, and reads them back afterwards.
 *
 * The client credentials are loaded before each request, so a test can point it at files that the
 * rollout replaces.
 */
import * as crypto from 'node:crypto';
import * as https from 'node:https';

export interface EtcdClientCredentials {
  readonly ca: Buffer;
  readonly cert: Buffer;
  readonly key: Buffer;
}

/** POSTs a JSON body to etcd's v3 gateway on one member and resolves with the parsed reply. */
export function etcdGateway(member: string, route: string, body: unknown, client: EtcdClientCredentials): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const request = https.request(
      { host: member, port: 2379, path: route, method: 'POST', ca: client.ca, cert: client.cert, key: client.key, timeout: 1000, headers: { 'content-type': 'application/json' } },
      (response) => {
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => (text += chunk));
        response.on('end', () => {
          if (response.statusCode !== 200) reject(new Error(`HTTP ${response.statusCode}: ${text}`));
          else resolve(JSON.parse(text) as Record<string, unknown>);
        });
      },
    );
    request.on('timeout', () => request.destroy(new Error('timed out')));
    request.on('error', reject);
    request.end(JSON.stringify(body));
  });
}

const b64 = (text: string): string => Buffer.from(text).toString('base64');

/** A failed write: when it started and what each member answered. */
export interface FailedWrite {
  readonly at: number;
  readonly errors: readonly string[];
}

export class EtcdWriter {
  readonly acknowledged: string[] = [];
  readonly failures: FailedWrite[] = [];
  private stopped = false;
  private loop: Promise<void> | undefined;

  constructor(
    private readonly members: readonly string[],
    private readonly credentials: () => EtcdClientCredentials,
    private readonly prefix = '/writer',
  ) {}

  /**
   * Loads the credentials until certificate and key match: a rollout renames the two files one
   * after the other, and a client that reads between the renames would see a mismatched pair.
   */
  private matchingCredentials(): EtcdClientCredentials {
    for (let attempt = 0; ; attempt++) {
      const loaded = this.credentials();
      try {
        if (new crypto.X509Certificate(loaded.cert).checkPrivateKey(crypto.createPrivateKey(loaded.key))) return loaded;
      } catch {
        // a file caught halfway through a rename reads as empty; load again
      }
      if (attempt >= 20) return loaded;
    }
  }

  /** Writes through the first member that accepts the write; returns the member's errors when none did. */
  async write(key: string, value: string): Promise<string[] | undefined> {
    const client = this.matchingCredentials();
    const errors: string[] = [];
    for (const member of this.members) {
      try {
        await etcdGateway(member, '/v3/kv/put', { key: b64(key), value: b64(value) }, client);
        return undefined;
      } catch (error) {
        errors.push(`${member}: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
    return errors;
  }

  /** Reads a key from the first member that answers; undefined when none did. */
  async read(key: string): Promise<string | undefined> {
    const client = this.matchingCredentials();
    for (const member of this.members) {
      try {
        const reply = await etcdGateway(member, '/v3/kv/range', { key: b64(key) }, client);
        const kvs = reply.kvs as { value: string }[] | undefined;
        return kvs?.[0] === undefined ? '' : Buffer.from(kvs[0].value, 'base64').toString();
      } catch {
        // try the next member
      }
    }
    return undefined;
  }

  start(): void {
    this.stopped = false;
    this.loop = (async () => {
      for (let index = this.acknowledged.length + this.failures.length; !this.stopped && index < 200_000; index++) {
        const key = `${this.prefix}/${index}`;
        const startedAt = Date.now();
        const errors = await this.write(key, String(index));
        if (errors === undefined) this.acknowledged.push(key);
        else this.failures.push({ at: startedAt, errors });
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    })();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }

  /** Keys whose acknowledged value does not read back. */
  async lost(): Promise<string[]> {
    const lost: string[] = [];
    for (const key of this.acknowledged) if ((await this.read(key)) !== key.split('/').pop()) lost.push(key);
    return lost;
  }
}
