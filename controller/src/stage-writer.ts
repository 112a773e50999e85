import { Worker } from 'node:worker_threads';

/** One node's files for the staging worker. Each `path` is the absolute path on the node. */
export interface StageRequest {
  readonly id: number;
  /** Directory in which the staging directory is created. */
  readonly parent: string;
  /** Name prefix of the staging directory, to which mkdtemp appends six random characters. */
  readonly prefix: string;
  readonly files: readonly { readonly path: string; readonly data: string; readonly mode: number }[];
}

export type StageReply =
  | { readonly id: number; readonly stagingDir: string; readonly directories: readonly string[]; readonly error?: undefined }
  | { readonly id: number; readonly error: string };

/** A staged node: its private staging directory and every directory created below it, itself included. */
export interface StagedTree {
  readonly stagingDir: string;
  readonly directories: readonly string[];
}

/**
 * Writes staged node trees on one worker thread, in request order. The files are not synced: the
 * caller syncs the file system once after staging every node.
 */
export class StageWriter {
  private readonly worker: Worker;
  private readonly pending = new Map<number, { resolve(tree: StagedTree): void; reject(error: Error): void }>();
  private nextId = 0;
  private failure: Error | undefined;

  constructor() {
    // Resolved by package name, so that the path stays valid in the controller's one-file bundle too.
    this.worker = new Worker(require.resolve('@kubetrust/controller/dist/stage-worker.js'));
    this.worker.on('message', (reply: StageReply) => {
      const waiter = this.pending.get(reply.id);
      this.pending.delete(reply.id);
      if (reply.error !== undefined) waiter?.reject(new Error(reply.error));
      else waiter?.resolve({ stagingDir: reply.stagingDir, directories: reply.directories });
    });
    this.worker.on('error', (error) => this.fail(new Error(`staging worker failed: ${error.message}`, { cause: error })));
    this.worker.on('exit', (code) => this.fail(new Error(`staging worker exited with code ${code}`)));
  }

  /** Creates a staging directory named PREFIX* in PARENT and writes the files below it. */
  stage(parent: string, prefix: string, files: StageRequest['files']): Promise<StagedTree> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    const request: StageRequest = { id: this.nextId++, parent, prefix, files };
    return new Promise((resolve, reject) => {
      this.pending.set(request.id, { resolve, reject });
      this.worker.postMessage(request);
    });
  }

  async close(): Promise<void> {
    this.failure ??= new Error('staging worker closed');
    await this.worker.terminate();
  }

  private fail(error: Error): void {
    this.failure ??= error;
    for (const waiter of this.pending.values()) waiter.reject(this.failure);
    this.pending.clear();
  }
}
