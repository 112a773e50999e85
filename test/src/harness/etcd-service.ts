#!/usr/bin/env node
/**
 * Stand-in for `systemctl restart etcd` on a simulated node: stops the member started earlier (by
 * the PID in its pid file) and starts a new one on the certificates installed below the node's
 * install root. Used as the agent's restart hook in tests and the demo.
 *
 *   node etcd-service.js restart SPEC.json
 *   node etcd-service.js stop SPEC.json
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { stopPidFile } from './pid-file';

export interface EtcdMemberSpec {
  readonly name: string;
  readonly address: string;
  readonly installRoot: string;
  readonly dataDir: string;
  readonly pidFile: string;
  readonly logFile: string;
  /** `name=https://address:2380` for every member. */
  readonly initialCluster: string;
  readonly etcdBinary: string;
  /**
   * TLS flags as `controller plan --flags` prints them for the node (`--cert-file=<node path>` and
   * so on), so the member runs on whatever path layout the inventory chose.
   */
  readonly tlsFlags: readonly string[];
}

export const ETCD_CLIENT_PORT = 2379;
export const ETCD_PEER_PORT = 2380;

function stop(spec: EtcdMemberSpec): Promise<void> {
  return stopPidFile(spec.pidFile);
}

/** Rewrites `--flag=/node/path` to point below the node's install root. */
function belowInstallRoot(spec: EtcdMemberSpec, flag: string): string {
  const [name, value] = flag.split('=', 2) as [string, string | undefined];
  return value !== undefined && value.startsWith('/') ? `${name}=${path.join(spec.installRoot, value)}` : flag;
}

function etcdArguments(spec: EtcdMemberSpec): string[] {
  const client = `https://${spec.address}:${ETCD_CLIENT_PORT}`;
  const peer = `https://${spec.address}:${ETCD_PEER_PORT}`;
  return [
    `--name=${spec.name}`,
    `--data-dir=${spec.dataDir}`,
    `--listen-client-urls=${client}`,
    `--advertise-client-urls=${client}`,
    `--listen-peer-urls=${peer}`,
    `--initial-advertise-peer-urls=${peer}`,
    `--initial-cluster=${spec.initialCluster}`,
    '--initial-cluster-state=new',
    '--initial-cluster-token=kubetrust-test',
    ...spec.tlsFlags.map((flag) => belowInstallRoot(spec, flag)),
  ];
}

async function restart(spec: EtcdMemberSpec): Promise<void> {
  await stop(spec);
  fs.mkdirSync(spec.dataDir, { recursive: true, mode: 0o700 });
  const log = fs.openSync(spec.logFile, 'a');
  const child = spawn(spec.etcdBinary, etcdArguments(spec), { detached: true, stdio: ['ignore', log, log] });
  if (child.pid === undefined) throw new Error(`cannot start ${spec.etcdBinary}`);
  fs.writeFileSync(spec.pidFile, String(child.pid));
  child.unref();
}

async function main(): Promise<void> {
  const [command, specFile] = process.argv.slice(2);
  if ((command !== 'restart' && command !== 'stop') || specFile === undefined) {
    process.stderr.write('usage: etcd-service.js restart|stop SPEC.json\n');
    process.exit(2);
  }
  const spec = JSON.parse(fs.readFileSync(specFile, 'utf8')) as EtcdMemberSpec;
  await (command === 'restart' ? restart(spec) : stop(spec));
}

if (require.main === module) {
  main().catch((error: unknown) => {
    process.stderr.write(`etcd-service: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  });
}
