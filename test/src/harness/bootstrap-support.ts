/**
 * Helpers shared by the end-to-end tests of `controller bootstrap` on the test nodes of
 * ssh-nodes.ts. They write the inventory, parse the JSON report, run commands without rejecting,
 * stand in for systemctl and drop the agent port inside a node's network namespace.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { CommandResult } from './local-cluster';
import type { SshNode, SshNodes } from './ssh-nodes';

/** One node of the report that `controller bootstrap --output json` prints. */
export interface NodeJson {
  name: string;
  action: string | null;
  status: string;
  reasons: string[];
  error: string | null;
  failedStep: string | null;
  timingsMs: Record<string, number>;
  init: string | null;
  rollback: { status: string; version: string; restored: string[]; error?: string } | null;
}

/** Returns the nodes of the report that `controller bootstrap --output json` printed, by name. */
export function parseBootstrapReport(result: CommandResult): Map<string, NodeJson> {
  let report: { nodes: NodeJson[] };
  try {
    report = JSON.parse(result.stdout) as { nodes: NodeJson[] };
  } catch {
    throw new Error(`bootstrap printed no JSON (exit ${result.code}):\n${result.stdout}\n${result.stderr}`);
  }
  return new Map(report.nodes.map((node) => [node.name, node]));
}

export interface Exec {
  readonly code: number;
  readonly output: string;
}

export function exec(command: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<Exec> {
  return new Promise((resolve) => {
    execFile(command, args, { env, timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : 1, output: `${stdout}${stderr}` });
    });
  });
}

/**
 * Stand-in for systemctl on a node whose view has /run/systemd/system: runs the ExecStart line of a
 * unit in /etc/systemd/system in a session of its own, with a PID file, and logs every call. A
 * process that exited counts as stopped even while it is a zombie, because it is no child of the
 * stand-in and whether anything reaps it depends on the host's PID 1.
 */
export function systemctlStandIn(dir: string): string {
  return `#!/bin/sh
echo "$*" >> ${dir}/systemctl.log
pidfile() { echo "${dir}/$1.pid"; }
running() {
  kill -0 "$1" 2>/dev/null && [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]
}
stop() {
  if [ -f "$(pidfile "$1")" ]; then
    pid=$(cat "$(pidfile "$1")")
    kill "$pid" 2>/dev/null
    while running "$pid"; do sleep 0.1; done
    rm -f "$(pidfile "$1")"
  fi
}
start() {
  command=$(sed -n 's/^ExecStart=//p' "/etc/systemd/system/$1")
  [ -n "$command" ] || { echo "no unit $1" >&2; exit 5; }
  setsid sh -c "exec $command" </dev/null >>${dir}/$1.log 2>&1 &
  echo $! > "$(pidfile "$1")"
}
case "$1" in
  daemon-reload|enable) ;;
  start) start "$2" ;;
  restart) stop "$2"; start "$2" ;;
  stop) stop "$2" ;;
  disable) if [ "$2" = --now ]; then stop "$3"; fi ;;
  *) echo "unsupported: $*" >&2; exit 1 ;;
esac
`;
}

/**
 * Gives a test node's own mount view an empty systemd runtime directory and unit directory, so
 * that bootstrap detects systemd there, and puts the systemctl stand-in on the node's PATH.
 */
export async function useSystemdStandIn(nodes: SshNodes, node: SshNode): Promise<void> {
  await nodes.inNodeMounts(node.index, 'sh', ['-c', 'mount -t tmpfs kubetrust-test /run/systemd && mkdir /run/systemd/system && mount -t tmpfs kubetrust-test /etc/systemd/system']);
  fs.writeFileSync(path.join(node.binDir, 'systemctl'), systemctlStandIn(node.dir), { mode: 0o755 });
}

/** One node of an inventory for the test nodes. */
export interface InventoryNode {
  readonly name: string;
  readonly node: SshNode;
  /** Roles as YAML flow items, such as `etcd, master`. */
  readonly roles: string;
  /** The node's own `ssh` mapping as YAML flow text, such as `{user: admin}`. */
  readonly ssh?: string;
}

/** Returns the text of an inventory whose nodes log in with the harness's client key and keep the agent below their own prefix. */
export function sshNodesInventory(cluster: string, nodes: SshNodes, apiServer: SshNode, knownHostsFile: string, entries: readonly InventoryNode[]): string {
  const lines = [
    'apiVersion: kubetrust/v1',
    'kind: Cluster',
    `metadata: {name: ${cluster}}`,
    'spec:',
    `  apiServer: {endpoint: "https://${apiServer.address}:6443"}`,
    '  pki: {keyAlgorithm: ECDSA-P256}',
    `  ssh: {privateKeyFile: ${nodes.clientKeyFile}, knownHostsFile: ${knownHostsFile}, agent: false}`,
    '  nodes:',
  ];
  for (const { name, node, roles, ssh } of entries) {
    lines.push(`    - name: ${name}`, `      addresses: [${node.address}]`, `      roles: [${roles}]`, `      agent: {prefix: ${node.prefix}}`);
    if (ssh !== undefined) lines.push(`      ssh: ${ssh}`);
  }
  return lines.join('\n') + '\n';
}

/** nftables table of the test rule, created only inside the test node's namespace. */
const TABLE = 'kubetrust_test';

/** Drops TCP packets to the agent port in a test node's network namespace, as a firewall between the admin host and the node would. */
export async function dropAgentPort(namespace: string, port = 7443): Promise<void> {
  for (const args of [
    ['add', 'table', 'inet', TABLE],
    ['add', 'chain', 'inet', TABLE, 'input', '{ type filter hook input priority 0; }'],
    ['add', 'rule', 'inet', TABLE, 'input', 'tcp', 'dport', String(port), 'drop'],
  ]) {
    const added = await exec('ip', ['netns', 'exec', namespace, 'nft', ...args]);
    if (added.code !== 0) throw new Error(`nft ${args.join(' ')} failed in ${namespace}: ${added.output}`);
  }
}

/** Removes the rule of dropAgentPort. */
export async function allowAgentPort(namespace: string): Promise<void> {
  const removed = await exec('ip', ['netns', 'exec', namespace, 'nft', 'delete', 'table', 'inet', TABLE]);
  if (removed.code !== 0) throw new Error(`nft delete table inet ${TABLE} failed in ${namespace}: ${removed.output}`);
}
