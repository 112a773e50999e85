/**
 * A client that keeps writing to a real etcd cluster through its HTTP gateway while a rollout
 * changes the members' certificates. It writes one key to the first member that takes it, as an
 * etcd client with several endpoints does, and pauses 50 ms before the next. It records every
 * acknowledged write and every write that no member took, and reads them back afterwards. With
 * `readBack`, it also reads each acknowledged key back right after writing it, before the pause.
 *
 * The client credentials are loaded before each request, so a test can point it at files that the
 * rollout replaces.
 */
import * as crypto from 'node:crypto';
import { EtcdGatewayClient, type EtcdClientCredentials } from './etcd-gateway';

/** Failed write: when it started and the error from each member. */
export interface FailedWrite {
  readonly at: number;
  readonly errors: readonly string[];
}

/** Read right after an acknowledged write that did not return the value written: what it returned, or why no member responded. */
export interface FailedReadBack {
  readonly at: number;
  readonly key: string;
  readonly value?: string;
  readonly error?: string;
}

export type { EtcdClientCredentials };

export class EtcdWriter {
  readonly acknowledged: string[] = [];
  readonly failures: FailedWrite[] = [];
  readonly readBackFailures: FailedReadBack[] = [];
  private stopped = false;
  private loop: Promise<void> | undefined;

  constructor(
    private readonly members: readonly string[],
    private readonly credentials: () => EtcdClientCredentials,
    private readonly prefix = '/writer',
    private readonly options: { readonly readBack?: boolean } = {},
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

  /** Returns a gateway client with the credentials as they are on disk now. */
  private client(): EtcdGatewayClient {
    return new EtcdGatewayClient(this.members, this.matchingCredentials(), 1000);
  }

  /** Writes through the first member that accepts the write; returns the member's errors when none did. */
  async write(key: string, value: string): Promise<readonly string[] | undefined> {
    const result = await this.client().put(key, value);
    return result.member === undefined ? result.errors : undefined;
  }

  /** Reads a key from the first member that responds; undefined when none did or the key does not exist. */
  async read(key: string): Promise<string | undefined> {
    return this.client()
      .get(key)
      .catch(() => undefined);
  }

  start(): void {
    this.stopped = false;
    this.loop = (async () => {
      for (let index = this.acknowledged.length + this.failures.length; !this.stopped && index < 200_000; index++) {
        const key = `${this.prefix}/${index}`;
        const startedAt = Date.now();
        const errors = await this.write(key, String(index));
        if (errors === undefined) {
          this.acknowledged.push(key);
          if (this.options.readBack === true) await this.readBack(key, String(index));
        } else {
          this.failures.push({ at: startedAt, errors });
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    })();
  }

  /** Reads `key` from the first member that responds and records a failure unless it returns `value`. */
  private async readBack(key: string, value: string): Promise<void> {
    const at = Date.now();
    try {
      const found = await this.client().get(key);
      if (found !== value) this.readBackFailures.push({ at, key, ...(found !== undefined ? { value: found } : {}) });
    } catch (error) {
      this.readBackFailures.push({ at, key, error: error instanceof Error ? error.message : String(error) });
    }
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
