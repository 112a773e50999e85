/**
 * A small etcd v3 client over etcd's HTTP/JSON gateway (`/v3/kv/put` and `/v3/kv/range` on the
 * client port) that authenticates with a TLS client certificate. Like an etcd client given several
 * endpoints, it tries the members in turn until one responds.
 *
 * Every request opens a new TLS connection, so each one verifies the member's current server
 * certificate and presents the current client credentials. A pooled connection would keep using
 * the certificates of its first handshake.
 */
import * as https from 'node:https';
import { ETCD_CLIENT_PORT } from './etcd-service';

export interface EtcdClientCredentials {
  /** PEM of the CA that signed the members' server certificates. */
  readonly ca: Buffer;
  readonly cert: Buffer;
  readonly key: Buffer;
}

/** Outcome of one write: the member that acknowledged it, or each member's error. */
export interface PutResult {
  readonly member?: string;
  readonly errors: readonly string[];
}

const b64 = (text: string): string => Buffer.from(text).toString('base64');

export class EtcdGatewayClient {
  /**
   * `members` are the members' client addresses. A request whose connection stays idle for
   * `requestTimeoutMs` counts as failed on that member, and the next member is tried.
   */
  constructor(
    private readonly members: readonly string[],
    public credentials: EtcdClientCredentials,
    private readonly requestTimeoutMs = 5_000,
  ) {}

  /** Writes `key` through the first member that acknowledges it. */
  async put(key: string, value: string): Promise<PutResult> {
    const errors: string[] = [];
    for (const member of this.members) {
      try {
        await this.post(member, '/v3/kv/put', { key: b64(key), value: b64(value) });
        return { member, errors };
      } catch (error) {
        errors.push(`${member}: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
    return { errors };
  }

  /** Reads `key` from the first member that responds; undefined when the key does not exist. Throws when no member responds. */
  async get(key: string): Promise<string | undefined> {
    const errors: string[] = [];
    for (const member of this.members) {
      try {
        const reply = await this.post(member, '/v3/kv/range', { key: b64(key) });
        const kvs = reply.kvs as { value?: string }[] | undefined;
        return kvs?.[0] === undefined ? undefined : Buffer.from(kvs[0].value ?? '', 'base64').toString();
      } catch (error) {
        errors.push(`${member}: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
    throw new Error(`no etcd member responded to the read of ${key}: ${errors.join('; ')}`);
  }

  /** POSTs a JSON body to one member and resolves with the parsed reply; any status other than 200 rejects. */
  post(member: string, route: string, body: unknown): Promise<Record<string, unknown>> {
    return this.send(member, 'POST', route, body);
  }

  /** Reads one member's `/health` endpoint, whose reply is `{"health":"true"}` while etcd counts the member healthy. */
  health(member: string): Promise<Record<string, unknown>> {
    return this.send(member, 'GET', '/health');
  }

  private send(member: string, method: 'GET' | 'POST', route: string, body?: unknown): Promise<Record<string, unknown>> {
    const { ca, cert, key } = this.credentials;
    return new Promise((resolve, reject) => {
      const request = https.request(
        { host: member, port: ETCD_CLIENT_PORT, path: route, method, ca, cert, key, agent: false, timeout: this.requestTimeoutMs, headers: { 'content-type': 'application/json' } },
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
      request.on('timeout', () => request.destroy(new Error(`timed out after ${this.requestTimeoutMs} ms`)));
      request.on('error', reject);
      request.end(body === undefined ? undefined : JSON.stringify(body));
    });
  }
}
