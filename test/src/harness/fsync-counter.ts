/**
 * Counts the fsync calls that code makes through `FileHandle.sync` of node:fs/promises, which the
 * atomic writes of `@kubetrust/shared/dist/files` use for files and directories.
 */
import * as fs from 'node:fs/promises';

interface SyncingPrototype {
  sync(this: unknown): Promise<void>;
}

/** Runs `run` and returns how many times it called FileHandle.sync. */
export async function countFsyncs(run: () => Promise<unknown>): Promise<number> {
  const handle = await fs.open(__filename, 'r');
  const prototype = Object.getPrototypeOf(handle) as SyncingPrototype;
  await handle.close();
  const original = prototype.sync;
  let count = 0;
  prototype.sync = function sync(this: unknown): Promise<void> {
    count++;
    return original.call(this);
  };
  try {
    await run();
  } finally {
    prototype.sync = original;
  }
  return count;
}
