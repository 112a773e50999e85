/**
 * Crash-safe file writes: content goes to a temporary name in the same directory, is fsynced,
 * then renamed over the target, and the directory is fsynced, so a reader sees the old file or
 * the new one, never a mix.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

export interface WriteOptions {
  readonly mode: number;
  /** Owner to set; skipped when undefined. */
  readonly uid?: number;
  readonly gid?: number;
  /**
   * False skips the fsync of the file and of its directory. The replace is still atomic and
   * survives a crash of this process, but a power loss may leave the previous content. Defaults to
   * true. Only records that nothing depends on for correctness may pass false.
   */
  readonly durable?: boolean;
}

/** Writes `data` to a fresh temporary file beside `target` and returns its path; nothing is renamed yet. */
export async function stageFile(target: string, data: Buffer | string, options: WriteOptions): Promise<string> {
  const dir = path.dirname(target);
  await fs.mkdir(dir, { recursive: true, mode: 0o755 });
  const temporary = path.join(dir, `.${path.basename(target)}.tmp-${crypto.randomBytes(6).toString('hex')}`);
  // Created with the final mode so a private key is never readable by others, not even briefly.
  const handle = await fs.open(temporary, 'wx', options.mode);
  try {
    await handle.writeFile(data);
    await handle.chmod(options.mode);
    if (options.uid !== undefined && options.gid !== undefined) {
      await handle.chown(options.uid, options.gid);
    }
    if (options.durable !== false) await handle.sync();
  } catch (error) {
    await handle.close();
    await fs.rm(temporary, { force: true });
    throw error;
  }
  await handle.close();
  return temporary;
}

/** Renames a staged file over its target and fsyncs the directory unless `durable` is false. */
export async function commitStagedFile(temporary: string, target: string, durable = true): Promise<void> {
  await fs.rename(temporary, target);
  if (durable) await syncDirectory(path.dirname(target));
}

export async function syncDirectory(dir: string): Promise<void> {
  const handle = await fs.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Writes one file atomically. */
export async function writeFileAtomic(target: string, data: Buffer | string, options: WriteOptions): Promise<void> {
  const temporary = await stageFile(target, data, options);
  await commitStagedFile(temporary, target, options.durable !== false);
}

/** Reads a file, or returns undefined when it does not exist. Other errors propagate. */
export async function readFileIfExists(file: string): Promise<Buffer | undefined> {
  try {
    return await fs.readFile(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/** Reads a JSON record kept in a state file; undefined when the file does not exist. */
export async function readJsonIfExists<T>(file: string): Promise<T | undefined> {
  const data = await readFileIfExists(file);
  return data === undefined ? undefined : (JSON.parse(data.toString('utf8')) as T);
}

/** Writes a JSON record atomically with mode 0600, or removes the file when the record is undefined. */
export async function writeJsonOrRemove(file: string, value: unknown): Promise<void> {
  if (value === undefined) await fs.rm(file, { force: true });
  else await writeFileAtomic(file, JSON.stringify(value, null, 2) + '\n', { mode: 0o600 });
}

export function sha256Hex(data: Buffer | string): string {
  return crypto.createHash('sha256').update(data).digest('hex');
}

/** Raised when another live process holds a lock file. */
export class LockedError extends Error {
  constructor(
    readonly file: string,
    readonly holder: number,
  ) {
    super(`${file} is held by process ${holder}`);
    this.name = 'LockedError';
  }
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Takes a lock file holding this process's PID and returns its release function. A lock left by a
 * process that no longer runs is taken over; one held by a live process raises LockedError.
 */
export async function acquirePidLock(file: string): Promise<() => Promise<void>> {
  await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const handle = await fs.open(file, 'wx', 0o600);
      await handle.writeFile(String(process.pid));
      await handle.close();
      return () => fs.rm(file, { force: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const holder = Number((await readFileIfExists(file))?.toString('utf8'));
      if (Number.isInteger(holder) && holder > 0 && isRunning(holder)) throw new LockedError(file, holder);
      await fs.rm(file, { force: true });
    }
  }
  throw new Error(`cannot take the lock ${file}`);
}
