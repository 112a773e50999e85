import { Worker } from 'node:worker_threads';
import { keyGenerationParameters, type GeneratedPublicKey, type KeyAlgorithm } from './keys';

/** A request to a worker: the number of keys to generate. */
export interface KeyGenerationRequest {
  readonly count: number;
}

/** A worker's reply: the keys of one request. */
export interface KeyGenerationResult {
  readonly keys: readonly { readonly spki: Uint8Array; readonly privateKeyPem: string }[];
}

/** A generated key pair: the public key ready to certify and the private key as PEM. */
export interface GeneratedKeyPair {
  readonly publicKey: GeneratedPublicKey;
  /** PKCS#1 "RSA PRIVATE KEY" or SEC1 "EC PRIVATE KEY", the formats kubeadm writes. */
  readonly privateKeyPem: string;
}

export interface KeyPoolOptions {
  /** Number of worker threads. Each generates one key at a time. */
  readonly threads: number;
  /** Keys per request to a worker. Larger batches need fewer messages, and 1 suits slow RSA keys. */
  readonly batchSize: number;
}

interface Waiter {
  resolve(key: GeneratedKeyPair): void;
  reject(error: Error): void;
}

/**
 * Generates a known number of key pairs on worker threads, so that key generation never runs on
 * the event loop. Workers start at once and keep generating until `total` keys are made; `take`
 * hands them out in the order they arrive. Each worker has at most two requests open, so one is
 * queued while it works on the other.
 */
export class KeyPool {
  private readonly workers: Worker[] = [];
  private readonly ready: GeneratedKeyPair[] = [];
  private readonly waiters: Waiter[] = [];
  private unrequested: number;
  private handedOut = 0;
  private failure: Error | undefined;
  private closed = false;
  private draining = false;

  constructor(
    private readonly algorithm: KeyAlgorithm,
    private readonly total: number,
    private readonly options: KeyPoolOptions,
  ) {
    if (!Number.isInteger(total) || total < 0) throw new RangeError(`key count ${total} is not a non-negative integer`);
    if (!Number.isInteger(options.threads) || options.threads < 1) throw new RangeError(`threads ${options.threads} is not a positive integer`);
    if (!Number.isInteger(options.batchSize) || options.batchSize < 1) throw new RangeError(`batchSize ${options.batchSize} is not a positive integer`);
    this.unrequested = total;
    const parameters = keyGenerationParameters(algorithm);
    const threads = Math.min(options.threads, Math.max(1, Math.ceil(total / options.batchSize)));
    for (let index = 0; index < threads && total > 0; index++) {
      // Resolved by package name, so that the path stays valid in the controller's one-file bundle too.
      const worker = new Worker(require.resolve('@kubetrust/shared/dist/pki/key-worker.js'), { workerData: { parameters } });
      worker.on('message', (result: KeyGenerationResult) => this.onKeys(worker, result));
      worker.on('error', (error) => this.fail(new Error(`key generation failed: ${error.message}`, { cause: error })));
      worker.on('exit', (code) => {
        if (!this.closed) this.fail(new Error(`key generation worker exited with code ${code} before generating every key`));
      });
      this.workers.push(worker);
      this.request(worker);
      this.request(worker);
    }
  }

  /** Returns the next generated key pair; rejects when a worker failed or more than `total` keys are taken. */
  take(): Promise<GeneratedKeyPair> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.handedOut >= this.total) return Promise.reject(new Error(`all ${this.total} ${this.algorithm} keys of this pool are taken`));
    this.handedOut++;
    // Even a key that is ready waits for the next turn. Callers sign as soon as they hold a key,
    // and many of them resumed in one turn (after a batch of messages) would block the loop.
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      this.drain();
    });
  }

  /** Stops the workers, drops the keys not taken and rejects every caller still waiting for a key. */
  async close(): Promise<void> {
    this.closed = true;
    this.ready.length = 0;
    this.fail(new Error(`the pool of ${this.algorithm} keys was closed`));
    await Promise.all(this.workers.map((worker) => worker.terminate()));
  }

  private request(worker: Worker): void {
    const count = Math.min(this.options.batchSize, this.unrequested);
    if (count === 0) return;
    this.unrequested -= count;
    const request: KeyGenerationRequest = { count };
    worker.postMessage(request);
  }

  private onKeys(worker: Worker, result: KeyGenerationResult): void {
    this.request(worker);
    for (const key of result.keys) {
      this.ready.push({ publicKey: { spki: Buffer.from(key.spki.buffer, key.spki.byteOffset, key.spki.byteLength), algorithm: this.algorithm }, privateKeyPem: key.privateKeyPem });
    }
    this.drain();
  }

  /**
   * Hands ready keys to waiting callers one per turn of the event loop. A batch resolved at once
   * would run every caller's signing in one stretch of microtasks and block the loop for as long.
   */
  private drain(): void {
    if (this.draining) return;
    this.draining = true;
    const step = (): void => {
      if (this.waiters.length > 0 && this.ready.length > 0) {
        this.waiters.shift()!.resolve(this.ready.shift()!);
        setImmediate(step);
      } else {
        this.draining = false;
      }
    };
    setImmediate(step);
  }

  private fail(error: Error): void {
    if (this.failure !== undefined) return;
    this.failure = error;
    for (const waiter of this.waiters.splice(0)) waiter.reject(error);
  }
}
