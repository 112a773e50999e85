import * as path from 'node:path';

/**
 * Maps a node path named by the controller to the host path below the install root.
 * Throws for relative paths and for any `..` segment, so no request can reach outside the root.
 */
export function hostPath(installRoot: string, nodePath: string): string {
  if (!path.isAbsolute(nodePath)) throw new Error(`path "${nodePath}" is not absolute`);
  if (nodePath.split('/').includes('..')) throw new Error(`path "${nodePath}" contains ".."`);
  return path.join(installRoot, nodePath);
}
