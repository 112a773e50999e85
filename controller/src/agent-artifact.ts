/**
 * Finds the single-file agent executable that `npm run package:agent` builds
 * (agent/packaging/build-artifact.js), for the machine type of a node.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** Machine types (`uname -m`) that the agent executable can be built for, with the Node.js arch of each. */
export const AGENT_MACHINES: Readonly<Record<string, string>> = { x86_64: 'x64', aarch64: 'arm64' };

export const AGENT_ARTIFACT_DIR = path.resolve(__dirname, '..', '..', 'agent', 'artifact');
export const PACKAGE_AGENT_COMMAND = 'npm run package:agent';

export interface AgentArtifact {
  readonly path: string;
  readonly bytes: number;
  /** Lowercase hex SHA-256 of the file, checked against the manifest and the .sha256 file. */
  readonly sha256: string;
  /** The agent version that `agent --version` prints. */
  readonly version: string;
  /** Node.js arch, such as x64. */
  readonly arch: string;
  /** `uname -m` of the machines it runs on, such as x86_64. */
  readonly machine: string;
}

interface ManifestEntry {
  readonly arch: string;
  readonly machine: string;
  readonly file: string;
  readonly bytes: number;
  readonly sha256: string;
}

interface Manifest {
  readonly version: string;
  readonly artifacts: readonly ManifestEntry[];
}

export class AgentArtifactError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AgentArtifactError';
  }
}

function readManifest(dir: string): Manifest {
  const file = path.join(dir, 'manifest.json');
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    throw new AgentArtifactError(`the agent executable is not built: ${file} is missing; run \`${PACKAGE_AGENT_COMMAND}\` in the kubetrust repository`);
  }
  try {
    const manifest = JSON.parse(text) as Manifest;
    if (typeof manifest.version !== 'string' || !Array.isArray(manifest.artifacts)) throw new Error('version or artifacts missing');
    return manifest;
  } catch (error) {
    throw new AgentArtifactError(`${file} is invalid (${(error as Error).message}); run \`${PACKAGE_AGENT_COMMAND}\` again`);
  }
}

/**
 * Reads the manifest of an agent directory before any node is contacted, so that a wrong
 * `--agent-dir` fails at once. Returns the agent version and the machine types built.
 */
export function readAgentManifest(dir: string = AGENT_ARTIFACT_DIR): { readonly version: string; readonly machines: readonly string[] } {
  if (!fs.existsSync(dir)) throw new AgentArtifactError(`agent directory ${dir} does not exist; pass --agent-dir with the directory that \`${PACKAGE_AGENT_COMMAND}\` built, or run it here`);
  const manifest = readManifest(dir);
  return { version: manifest.version, machines: manifest.artifacts.map((entry) => entry.machine) };
}

async function sha256OfFile(file: string): Promise<string> {
  const hash = crypto.createHash('sha256');
  for await (const chunk of fs.createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * Returns the agent executable for a node whose `uname -m` prints `machine`. Throws
 * AgentArtifactError when no executable exists for that machine type, when it was not built, or
 * when the file no longer matches the digest recorded at build time.
 */
export async function findAgentArtifact(machine: string, options: { readonly dir?: string } = {}): Promise<AgentArtifact> {
  const dir = options.dir ?? AGENT_ARTIFACT_DIR;
  const arch = AGENT_MACHINES[machine.trim()];
  if (arch === undefined) {
    throw new AgentArtifactError(`no agent executable exists for machine type "${machine.trim()}" (uname -m); kubetrust builds it for ${Object.keys(AGENT_MACHINES).join(' and ')} only`);
  }

  const manifest = readManifest(dir);
  const entry = manifest.artifacts.find((candidate) => candidate.arch === arch);
  if (entry === undefined) {
    const built = manifest.artifacts.map((candidate) => candidate.machine).join(', ') || 'none';
    throw new AgentArtifactError(
      `the agent executable for ${machine.trim()} is not built in ${dir} (built: ${built}); run \`${PACKAGE_AGENT_COMMAND}\` on a ${machine.trim()} Linux machine, because Node.js builds a single executable only from its own binary, and copy the result into ${dir}`,
    );
  }

  const file = path.join(dir, entry.file);
  let bytes: number;
  try {
    bytes = fs.statSync(file).size;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    throw new AgentArtifactError(`${file} is listed in ${path.join(dir, 'manifest.json')} but missing; run \`${PACKAGE_AGENT_COMMAND}\` again`);
  }

  const sha256 = await sha256OfFile(file);
  let recorded: string | undefined;
  try {
    recorded = fs.readFileSync(`${file}.sha256`, 'utf8').split(/\s+/)[0];
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    throw new AgentArtifactError(`${file}.sha256 is missing; run \`${PACKAGE_AGENT_COMMAND}\` again`);
  }
  if (sha256 !== entry.sha256 || sha256 !== recorded) {
    throw new AgentArtifactError(`${file} has SHA-256 ${sha256}, not the ${entry.sha256} recorded when it was built; run \`${PACKAGE_AGENT_COMMAND}\` again`);
  }
  return { path: file, bytes, sha256, version: manifest.version, arch: entry.arch, machine: entry.machine };
}
