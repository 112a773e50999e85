/**
 * A child process that installs one change set through the agent's real Installer and is killed
 * partway by the crash tests. Every file of generation N contains `generation N`, so after a crash
 * the test can tell old files from new ones.
 *
 *   node install-child.js ROOT STATE_DIR GENERATION FILES
 */
import { Installer } from '@kubetrust/agent/dist/install';
import { StagedKeys } from '@kubetrust/agent/dist/staged-keys';
import { silentLogger } from '@kubetrust/shared/dist/log';

export function crashTestPaths(count: number): string[] {
  return Array.from({ length: count }, (_, index) => `/etc/kubernetes/pki/item-${String(index).padStart(2, '0')}.${index % 2 === 0 ? 'crt' : 'key'}`);
}

async function main(): Promise<void> {
  const [root, stateDir, generationText, countText] = process.argv.slice(2);
  const generation = Number(generationText);
  const installer = new Installer(root!, stateDir!, new StagedKeys(stateDir!), silentLogger());
  await installer.recoverInterruptedChange();
  const changes = crashTestPaths(Number(countText)).map((path) => ({
    path,
    mode: path.endsWith('.key') ? 0o600 : 0o644,
    uid: 0,
    gid: 0,
    data: Buffer.from(`generation ${generation}\n`),
    content: 'data' as const,
  }));
  await installer.install(`gen-${generation}`, changes);
  process.stdout.write('installed\n');
}

if (require.main === module) {
  main().catch((error: unknown) => {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  });
}
