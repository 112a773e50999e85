/**
 * Worker thread of StageWriter: creates a node's private staging directory in OUT and writes the
 * node's files into it. Creating thousands of files blocks in the kernel whenever the file system
 * is busy, so these calls run here, where they cannot stall the controller's event loop.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parentPort } from 'node:worker_threads';
import type { StageReply, StageRequest } from './stage-writer';

const port = parentPort;
if (port === null) throw new Error('stage-worker.js runs only as a worker thread of StageWriter');

/** Creates a file that must not exist yet with `mode` and writes `data` to it. */
function writeNewFile(target: string, data: string, mode: number): void {
  const fd = fs.openSync(target, 'wx', mode);
  try {
    fs.writeFileSync(fd, data);
    // The mode given to open is reduced by the umask, so it is set again.
    fs.fchmodSync(fd, mode);
  } finally {
    fs.closeSync(fd);
  }
}

function stage(request: StageRequest): StageReply {
  let stagingDir: string | undefined;
  try {
    // mkdtemp creates the directory with mode 0700, and it becomes the node directory on commit,
    // so the keys below it are never readable by other users.
    stagingDir = fs.mkdtempSync(path.join(request.parent, request.prefix));
    const directories = new Set<string>([stagingDir]);
    for (const file of request.files) {
      const target = path.join(stagingDir, file.path);
      const directory = path.dirname(target);
      if (!directories.has(directory)) {
        fs.mkdirSync(directory, { recursive: true, mode: 0o755 });
        directories.add(directory);
      }
      writeNewFile(target, file.data, file.mode);
    }
    return { id: request.id, stagingDir, directories: [...directories] };
  } catch (error) {
    if (stagingDir !== undefined) fs.rmSync(stagingDir, { recursive: true, force: true });
    return { id: request.id, error: (error as Error).message };
  }
}

port.on('message', (request: StageRequest) => port.postMessage(stage(request)));
