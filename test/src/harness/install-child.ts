/**
 * A child process that installs the change sets of one generation through the agent's real
 * Installer, one set after another, and that the crash tests kill partway. The test writes the
 * sets of every generation to a fixture file once, so each run installs the same keys and
 * certificates and the test can tell old files from new ones.
 *
 *   node install-child.js ROOT STATE_DIR FIXTURE GENERATION CHANGE_ID_SUFFIX
 *
 * The child puts the generation's private keys into the agent's staged-key store first, as
 * PrepareKeys would have, and then prints `ready`. Every set is one change, with the change id
 * `<set>-<suffix>`, so a kill between two sets leaves the first one installed.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { FileChange__Output } from '@kubetrust/proto';
import { Installer } from '@kubetrust/agent/dist/install';
import { StagedKeys } from '@kubetrust/agent/dist/staged-keys';
import { writeFileAtomic } from '@kubetrust/shared/dist/files';
import { silentLogger } from '@kubetrust/shared/dist/log';

/** One file of a change set, as the controller sends it: certificate PEM, staged key or kubeconfig. */
export interface CrashFileChange {
  readonly path: string;
  readonly mode: number;
  readonly certificatePem?: string;
  readonly stagedKeyId?: string;
  readonly kubeconfig?: {
    readonly clusterName: string;
    readonly server: string;
    readonly user: string;
    readonly certificateAuthorityPem: string;
    readonly clientCertificatePem: string;
    readonly clientKeyId: string;
  };
}

export interface CrashChangeSet {
  readonly name: string;
  readonly changes: readonly CrashFileChange[];
}

export interface CrashGeneration {
  /** PEM of each private key, by staged key id. */
  readonly stagedKeys: Readonly<Record<string, string>>;
  readonly sets: readonly CrashChangeSet[];
}

export interface CrashFixture {
  readonly generations: readonly CrashGeneration[];
}

function toFileChange(change: CrashFileChange): FileChange__Output {
  const owner = { path: change.path, mode: change.mode, uid: 0, gid: 0 };
  if (change.stagedKeyId !== undefined) return { ...owner, staged_key_id: change.stagedKeyId, content: 'staged_key_id' };
  if (change.kubeconfig !== undefined) {
    const kubeconfig = change.kubeconfig;
    return {
      ...owner,
      kubeconfig: {
        cluster_name: kubeconfig.clusterName,
        server: kubeconfig.server,
        user: kubeconfig.user,
        certificate_authority_pem: Buffer.from(kubeconfig.certificateAuthorityPem),
        client_certificate_pem: Buffer.from(kubeconfig.clientCertificatePem),
        client_key_id: kubeconfig.clientKeyId,
      },
      content: 'kubeconfig',
    };
  }
  if (change.certificatePem !== undefined) return { ...owner, data: Buffer.from(change.certificatePem), content: 'data' };
  throw new Error(`${change.path}: the fixture has no content for this file`);
}

async function main(): Promise<void> {
  const [root, stateDir, fixtureFile, generationText, suffix] = process.argv.slice(2);
  const fixture = JSON.parse(fs.readFileSync(fixtureFile!, 'utf8')) as CrashFixture;
  const generation = fixture.generations[Number(generationText)];
  if (generation === undefined) throw new Error(`generation ${generationText} is not in ${fixtureFile}`);

  // The staged-key store keeps each key as <state dir>/staged-keys/<id>.key.
  for (const [keyId, pem] of Object.entries(generation.stagedKeys)) {
    await writeFileAtomic(path.join(stateDir!, 'staged-keys', `${keyId}.key`), pem, { mode: 0o600 });
  }
  process.stdout.write('ready\n');

  const installer = new Installer(root!, stateDir!, new StagedKeys(stateDir!), silentLogger());
  for (const set of generation.sets) {
    await installer.install(`${set.name}-${suffix}`, set.changes.map(toFileChange));
  }
  process.stdout.write('installed\n');
}

if (require.main === module) {
  main().catch((error: unknown) => {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  });
}
