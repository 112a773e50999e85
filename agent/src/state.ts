/** Reads the node's files at the paths the controller requests. */
import type { FileQuery__Output, FileState } from '@kubetrust/proto';
import { readFileState } from '@kubetrust/shared/dist/file-state';
import { hostPath } from './paths';

export function readNodeFile(installRoot: string, query: FileQuery__Output): Promise<FileState> {
  return readFileState(hostPath(installRoot, query.path), query.path, query.kind);
}
