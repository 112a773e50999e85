/**
 * Services that still need a restart. A service is recorded before the files it reads are renamed
 * into place and removed only after it restarted and passed its health check, so neither a failed
 * restart nor an agent crash between the install and the restart is forgotten.
 */
import * as path from 'node:path';
import { SERVICES } from '@kubetrust/shared/dist/catalogue';
import { readFileIfExists, writeFileAtomic } from '@kubetrust/shared/dist/files';

export class PendingRestarts {
  private readonly file: string;

  constructor(stateDir: string) {
    this.file = path.join(stateDir, 'pending-restarts.json');
  }

  async list(): Promise<string[]> {
    const data = await readFileIfExists(this.file);
    return data === undefined ? [] : (JSON.parse(data.toString('utf8')) as string[]);
  }

  async add(services: readonly string[]): Promise<void> {
    const current = await this.list();
    await this.save([...current, ...services]);
  }

  async remove(service: string): Promise<void> {
    const current = await this.list();
    await this.save(current.filter((name) => name !== service));
  }

  private async save(services: readonly string[]): Promise<void> {
    await writeFileAtomic(this.file, JSON.stringify(orderServices(services)) + '\n', { mode: 0o600 });
  }
}

/** Deduplicates service names and puts them in restart order: etcd first, then the control plane, then node services. */
export function orderServices(services: readonly string[]): string[] {
  const known = SERVICES.filter((service) => services.includes(service));
  const unknown = [...new Set(services.filter((service) => !(SERVICES as readonly string[]).includes(service)))];
  return [...known, ...unknown];
}
