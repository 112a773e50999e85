/**
 * The record of a CA rotation in the state directory, and what each phase means for the files
 * nodes hold. The phase decides three things for the rotating CA:
 *
 *   phase            trust files and kubeconfig CAs   client certificates   serving certificates
 *   prepared         old + new                        old CA                old CA
 *   clients-updated  old + new                        new CA                old CA
 *   servers-updated  old + new                        new CA                new CA
 *   finishing        new                              new CA                new CA
 *   rolling-back     old + new                        old CA                old CA
 *   rolled-back      old                              old CA                old CA
 *
 * A certificate with serverAuth is a serving certificate, even when it is also a client (etcd's
 * server and peer certificates); every other leaf and every kubeconfig is a client certificate.
 * The controller-manager's signer (CA key and signer certificate) follows the client column.
 *
 *   pki/ca-rotation.json         the rotation in progress: CA, phase, times
 *   pki/<ca>-next.crt, .key      the new CA until `finish` makes it the CA
 *
 * At most one CA rotates at a time.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { CaName } from '@kubetrust/shared/dist/catalogue';
import type { ExtKeyUsage } from '@kubetrust/shared/dist/pki';
import { readJsonIfExists, writeJsonOrRemove } from '@kubetrust/shared/dist/files';
import type { KeyMaterial, StateDir } from './state-dir';

export const CA_ROTATION_STATES = ['prepared', 'clients-updated', 'servers-updated', 'finishing', 'rolling-back', 'rolled-back'] as const;
export type CaRotationState = (typeof CA_ROTATION_STATES)[number];

export interface CaRotationRecord {
  readonly ca: CaName;
  readonly state: CaRotationState;
  /** Time at which `prepare` generated the new CA, in ISO 8601. */
  readonly startedAt: string;
  /** Time at which the current state began, in ISO 8601. */
  readonly updatedAt: string;
  /** Serial number of the CA being replaced and of its successor, for status output. */
  readonly oldSerial: string;
  readonly newSerial: string;
}

/** Generation of the CA that each kind of file uses in a state. */
export interface CaView {
  readonly trust: readonly ('old' | 'new')[];
  readonly client: 'old' | 'new';
  readonly server: 'old' | 'new';
}

const VIEWS: Record<CaRotationState, CaView> = {
  prepared: { trust: ['old', 'new'], client: 'old', server: 'old' },
  'clients-updated': { trust: ['old', 'new'], client: 'new', server: 'old' },
  'servers-updated': { trust: ['old', 'new'], client: 'new', server: 'new' },
  finishing: { trust: ['new'], client: 'new', server: 'new' },
  'rolling-back': { trust: ['old', 'new'], client: 'old', server: 'old' },
  'rolled-back': { trust: ['old'], client: 'old', server: 'old' },
};

/** Returns what the files of a CA in `state` hold; every file uses the old CA alone without a rotation. */
export function caView(state: CaRotationState | undefined): CaView {
  return state === undefined ? { trust: ['old'], client: 'old', server: 'old' } : VIEWS[state];
}

export type CertificateSide = 'client' | 'server';

/** Returns `server` for a certificate that can authenticate a server, which moves with the servers, and `client` otherwise. */
export function sideOf(extKeyUsage: readonly ExtKeyUsage[]): CertificateSide {
  return extKeyUsage.includes('serverAuth') ? 'server' : 'client';
}

/** Joins CA certificates into one PEM bundle, one certificate after the other. */
export function bundle(certificates: readonly string[]): string {
  return certificates.map((pem) => pem.trim()).join('\n') + '\n';
}

/** The two generations of one CA while it rotates; `next` is undefined once the record is gone. */
export interface CaGenerations {
  readonly current: KeyMaterial;
  readonly next?: KeyMaterial;
  readonly state?: CaRotationState;
}

/** Picks the key material a generation name stands for, failing when the new CA is missing from the state directory. */
export function generation(generations: CaGenerations, which: 'old' | 'new', ca: CaName): KeyMaterial {
  if (which === 'old') return generations.current;
  if (generations.next === undefined) throw new Error(`the new ${ca} is missing while its rotation is ${generations.state ?? 'not started'}; restore pki/${ca}-next.crt and .key from a backup of the state directory`);
  return generations.next;
}

/** Returns the CA that signs certificates of `side` in the generations' state. */
export function issuerOf(generations: CaGenerations, side: CertificateSide, ca: CaName): KeyMaterial {
  return generation(generations, caView(generations.state)[side], ca);
}

/** Returns the CA certificates that trust files contain in the generations' state, one PEM each. */
export function trustedCertificates(generations: CaGenerations, ca: CaName): string[] {
  return caView(generations.state).trust.map((which) => generation(generations, which, ca).certificatePem);
}

/** Returns the content of a trust file: the one CA certificate as stored, or a bundle while the CA rotates. */
export function trustPem(generations: CaGenerations, ca: CaName): string {
  const trust = trustedCertificates(generations, ca);
  return trust.length === 1 ? trust[0]! : bundle(trust);
}

export class CaRotationFiles {
  constructor(private readonly state: StateDir) {}

  get recordFile(): string {
    return this.state.path('pki', 'ca-rotation.json');
  }

  nextFiles(ca: CaName): { certificate: string; privateKey: string } {
    return { certificate: this.state.path('pki', `${ca}-next.crt`), privateKey: this.state.path('pki', `${ca}-next.key`) };
  }

  record(): Promise<CaRotationRecord | undefined> {
    return readJsonIfExists<CaRotationRecord>(this.recordFile);
  }

  setRecord(record: CaRotationRecord | undefined): Promise<void> {
    return writeJsonOrRemove(this.recordFile, record);
  }

  /** Loads both generations of `ca`; without a rotation of it, only the current one. `label` names the CA in errors. */
  async generations(ca: CaName, record: CaRotationRecord | undefined, label = `${ca} CA`): Promise<CaGenerations> {
    const rotating = record?.ca === ca ? record : undefined;
    // In `finishing` the new CA may already have replaced the old files, halfway or wholly; only the new one is read.
    if (rotating?.state === 'finishing') {
      const next = await this.state.loadKeyMaterial(this.nextFiles(ca), `new ${ca}`);
      return { current: next, next, state: rotating.state };
    }
    const current = await this.state.loadKeyMaterial(this.state.caFiles(ca), label);
    if (rotating === undefined) return { current };
    if (rotating.state === 'rolled-back') return { current, state: rotating.state };
    return { current, next: await this.state.loadKeyMaterial(this.nextFiles(ca), `new ${ca}`), state: rotating.state };
  }

  async removeNext(ca: CaName): Promise<void> {
    const files = this.nextFiles(ca);
    await fs.rm(files.privateKey, { force: true });
    await fs.rm(files.certificate, { force: true });
  }

  /** Directory of the state files, for messages. */
  get dir(): string {
    return path.dirname(this.recordFile);
  }
}
