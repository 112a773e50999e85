/**
 * Watches a TLS-bootstrapping kubelet until it has registered, then deletes its bootstrap
 * kubeconfig. The kubelet has registered when the file at the client certificate path (usually the
 * symlink `kubelet-client-current.pem`) holds a certificate for `system:node:<node>` in
 * `system:nodes` that the cluster CA signed and that is valid now. From then on the bootstrap
 * token in the kubeconfig is of no use on the node, so it does not stay on its disk.
 *
 * The watch survives agent restarts: it is kept in `kubelet-bootstrap.json` in the state
 * directory. While nothing is watched, no timer runs.
 */
import { X509Certificate } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { KubeletBootstrapState__Output as KubeletBootstrapState, KubeletBootstrapWatch } from '@kubetrust/proto';
import { writeFileAtomic } from '@kubetrust/shared/dist/files';
import type { Logger } from '@kubetrust/shared/dist/logger';
import { InvalidRequestError } from './errors';
import { hostPath } from './paths';

/** How often the files are read again while watching, besides the change events of the directory. */
export const REGISTRATION_POLL_MS = 2_000;
const STATE_FILE = 'kubelet-bootstrap.json';

export interface Persisted {
  readonly watch: Required<Pick<KubeletBootstrapWatch, 'bootstrap_kubeconfig_path' | 'client_certificate_path' | 'ca_path'>>;
  readonly state: KubeletBootstrapState;
}

/** Splits a PEM bundle into its certificates; unreadable blocks are skipped. */
function certificates(pem: string): X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  const parsed: X509Certificate[] = [];
  for (const block of blocks) {
    try {
      parsed.push(new X509Certificate(block));
    } catch {
      // A damaged block is reported as "no certificate" by the caller when nothing else is left.
    }
  }
  return parsed;
}

/**
 * Checks one kubelet client certificate file against the node name and the cluster CA bundle.
 * Returns what was found, in words, and whether it is a registration.
 */
export function inspectClientCertificate(certificatePem: string, caPem: string, nodeName: string, now: Date): { registered: boolean; observed: string; subject?: string; serial?: string } {
  const [certificate] = certificates(certificatePem);
  if (certificate === undefined) return { registered: false, observed: 'the kubelet client certificate file holds no certificate' };
  const subject = certificate.subject.replace(/\n/g, ', ');
  const expectedCn = `CN=system:node:${nodeName}`;
  const lines = certificate.subject.split('\n');
  if (!lines.includes(expectedCn)) return { registered: false, observed: `the kubelet client certificate is for ${subject}, not system:node:${nodeName}` };
  if (!lines.includes('O=system:nodes')) return { registered: false, observed: `the kubelet client certificate (${subject}) is not in group system:nodes` };
  const issuer = certificates(caPem).find((ca) => certificate.checkIssued(ca) && certificate.verify(ca.publicKey));
  if (issuer === undefined) return { registered: false, observed: `the kubelet client certificate (${subject}) does not chain to the cluster CA` };
  if (Date.parse(certificate.validFrom) > now.getTime() || Date.parse(certificate.validTo) <= now.getTime()) {
    return { registered: false, observed: `the kubelet client certificate (${subject}) is valid only from ${certificate.validFrom} to ${certificate.validTo}` };
  }
  return { registered: true, observed: `the kubelet holds a client certificate for system:node:${nodeName}, serial ${certificate.serialNumber}`, subject, serial: certificate.serialNumber };
}

export class KubeletRegistration {
  private current: Persisted | undefined;
  private watcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private checking: Promise<void> | undefined;

  constructor(
    private readonly installRoot: string,
    private readonly stateDir: string,
    private readonly nodeName: string,
    private readonly logger: Logger,
    private readonly pollMs = REGISTRATION_POLL_MS,
  ) {}

  /** Resumes a watch that an earlier agent process left unfinished. */
  async resume(): Promise<void> {
    let text: string;
    try {
      text = await fs.readFile(path.join(this.stateDir, STATE_FILE), 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw error;
    }
    this.current = JSON.parse(text) as Persisted;
    if (this.current.state.watching) this.startWatching();
  }

  /** Checks a watch request before its change is installed; throws InvalidRequestError for a bad path. */
  validate(request: KubeletBootstrapWatch): Persisted['watch'] {
    const watchSpec = {
      bootstrap_kubeconfig_path: request.bootstrap_kubeconfig_path ?? '',
      client_certificate_path: request.client_certificate_path ?? '',
      ca_path: request.ca_path ?? '',
    };
    for (const [field, value] of Object.entries(watchSpec)) {
      try {
        hostPath(this.installRoot, value);
      } catch (error) {
        throw new InvalidRequestError(`kubelet_bootstrap.${field}: ${(error as Error).message}; send an absolute node path`);
      }
    }
    return watchSpec;
  }

  /** Starts watching after a change installed a bootstrap kubeconfig; replaces an earlier watch. */
  async arm(watchSpec: Persisted['watch']): Promise<void> {
    this.current = {
      watch: watchSpec,
      state: { watching: true, registered: false, observed: 'waiting for the kubelet to register', bootstrap_kubeconfig_removed: false, registered_unix_ms: '', client_certificate_subject: '', client_certificate_serial: '' },
    };
    await this.persist();
    this.logger.info('watching the kubelet registration', { node: this.nodeName, clientCertificate: watchSpec.client_certificate_path });
    this.startWatching();
    await this.check();
  }

  /** Returns the state that GetState reports, with every field empty when no bootstrap was watched. */
  state(): KubeletBootstrapState {
    return this.current?.state ?? { watching: false, registered: false, observed: '', bootstrap_kubeconfig_removed: false, registered_unix_ms: '', client_certificate_subject: '', client_certificate_serial: '' };
  }

  /** Reads the files once; serialised, so a burst of change events costs one read at a time. */
  check(): Promise<void> {
    this.checking ??= this.checkOnce().finally(() => {
      this.checking = undefined;
    });
    return this.checking;
  }

  stop(): void {
    this.watcher?.close();
    this.watcher = undefined;
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  private startWatching(): void {
    this.stop();
    const current = this.current;
    if (current === undefined) return;
    const dir = path.dirname(hostPath(this.installRoot, current.watch.client_certificate_path));
    try {
      // The kubelet replaces the symlink when it writes a new certificate, which changes the directory.
      this.watcher = watch(dir, () => void this.check());
      this.watcher.on('error', () => this.watcher?.close());
    } catch {
      // The directory may not exist before the kubelet first starts; the poll covers that.
    }
    this.timer = setInterval(() => void this.check(), this.pollMs);
    this.timer.unref();
  }

  private async checkOnce(): Promise<void> {
    const current = this.current;
    if (current === undefined || !current.state.watching) return;
    const certificateFile = hostPath(this.installRoot, current.watch.client_certificate_path);
    let certificatePem: string;
    let caPem: string;
    try {
      certificatePem = await fs.readFile(certificateFile, 'utf8');
    } catch {
      await this.observe(`no file at ${current.watch.client_certificate_path} yet`);
      return;
    }
    try {
      caPem = await fs.readFile(hostPath(this.installRoot, current.watch.ca_path), 'utf8');
    } catch {
      await this.observe(`no cluster CA at ${current.watch.ca_path}`);
      return;
    }
    const found = inspectClientCertificate(certificatePem, caPem, this.nodeName, new Date());
    if (!found.registered) {
      await this.observe(found.observed);
      return;
    }
    const kubeconfig = hostPath(this.installRoot, current.watch.bootstrap_kubeconfig_path);
    await fs.rm(kubeconfig, { force: true });
    this.current = {
      watch: current.watch,
      state: {
        watching: false,
        registered: true,
        observed: found.observed,
        bootstrap_kubeconfig_removed: true,
        registered_unix_ms: String(Date.now()),
        client_certificate_subject: found.subject ?? '',
        client_certificate_serial: found.serial ?? '',
      },
    };
    this.stop();
    await this.persist();
    this.logger.info('kubelet registered; bootstrap kubeconfig deleted', { node: this.nodeName, path: current.watch.bootstrap_kubeconfig_path, serial: found.serial ?? '' });
  }

  private async observe(observed: string): Promise<void> {
    const current = this.current;
    if (current === undefined || current.state.observed === observed) return;
    this.current = { watch: current.watch, state: { ...current.state, observed } };
    await this.persist();
  }

  private async persist(): Promise<void> {
    await writeFileAtomic(path.join(this.stateDir, STATE_FILE), JSON.stringify(this.current, null, 2), { mode: 0o600 });
  }
}
