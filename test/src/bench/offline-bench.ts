#!/usr/bin/env node
/**
 * Times `controller issue --out DIR` for a cluster of 3 etcd nodes, 3 masters and N workers: the
 * offline mode, in which the controller generates every node key itself and writes one directory
 * tree per node.
 *
 *   node test/dist/bench/offline-bench.js [--workers N] [--algorithm RSA-2048|ECDSA-P256]
 *        [--key-median-ms MS] [--workdir DIR] [--keep] [--resource-usage auto|time|proc|off] [--cpu-prof]
 *
 * `controller init` runs first and is not timed. The issue run is the real CLI, timed from process
 * start to exit, with KUBETRUST_EVENT_LOOP_REPORT set so that the controller reports its event-loop
 * delay. Checks after it (not timed): exit code 0, every node written, the ledger and the manifest
 * list every certificate the catalogue defines, and every manifest file exists. With
 * --key-median-ms (the median time of one native key generation, from keygen-limit.js), the result
 * also gives the native limit, keys x median / cores, and the wall time as a ratio to it. The last
 * line of output is `RESULT kubetrust-offline key=value...`.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { loadInventory } from '@kubetrust/shared/dist/inventory';
import { KEY_ALGORITHMS, type KeyAlgorithm } from '@kubetrust/shared/dist/pki';
import {
  BenchError,
  eventLoopFigures,
  MAX_WORKERS,
  cpuSeconds,
  extraCaCerts,
  expectedIssued,
  inventoryYaml,
  ledgerCount,
  megabytes,
  positiveInteger,
  progress,
  resolveResourceUsage,
  runControllerMeasured,
  seconds,
  type MeasuredRun,
  type ResourceUsageMode,
  runBenchMain,
} from './bench-support';

interface OfflineOptions {
  readonly workers: number;
  readonly algorithm: KeyAlgorithm;
  readonly keyMedianMs: number | undefined;
  readonly workdir: string | undefined;
  readonly keep: boolean;
  readonly resourceUsage: ResourceUsageMode;
  readonly cpuProfile: boolean;
  /** Whether the controller keeps NODE_EXTRA_CA_CERTS. */
  readonly keepExtraCaCerts: boolean;
}

interface IssueJson {
  readonly written: readonly string[];
  readonly files: number;
  readonly nodes: readonly { readonly name: string; readonly files: number; readonly certificatesIssued: number }[];
}

interface OfflineResult {
  /** The file system of the work directory, which contains the state directory and the output. */
  readonly storage: string;
  readonly nodes: number;
  readonly issued: number;
  readonly files: number;
  readonly issue: MeasuredRun;
}

/** File system magic numbers from statfs(2) for the names in the result line. */
const FILE_SYSTEMS: Readonly<Record<number, string>> = { 0x01021994: 'tmpfs', 0xef53: 'ext4', 0x58465342: 'xfs', 0x9123683e: 'btrfs', 0x794c7630: 'overlay' };

/** Names the file system that contains `dir`: tmpfs, ext4 (also ext2 and ext3), or the magic number in hex. */
function fileSystemOf(dir: string): string {
  const type = fs.statfsSync(dir).type;
  return FILE_SYSTEMS[type] ?? `0x${type.toString(16)}`;
}

/** Counts regular files below `dir`, without following symbolic links. */
function countFiles(dir: string): number {
  let total = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) total++;
  }
  return total;
}

async function runOffline(options: OfflineOptions, workdir: string): Promise<OfflineResult> {
  const inventoryFile = path.join(workdir, 'inventory.yaml');
  const stateDir = path.join(workdir, 'state');
  const outDir = path.join(workdir, 'out');
  const logsDir = path.join(workdir, 'logs');
  fs.mkdirSync(logsDir, { recursive: true });
  fs.writeFileSync(inventoryFile, inventoryYaml(options.workers, options.algorithm));
  const inventory = loadInventory(inventoryFile).inventory;
  const common = ['--inventory', inventoryFile, '--state-dir', stateDir];

  progress(`controller init (not timed), ${options.algorithm}`);
  const initLog = path.join(logsDir, 'init.log');
  const init = await runControllerMeasured(['init', ...common, '--output', 'json'], initLog, { resourceUsage: 'off', keepExtraCaCerts: options.keepExtraCaCerts });
  if (init.code !== 0) throw new BenchError(`controller init exited with ${init.code}; see ${initLog}`);

  progress(`controller issue --out for ${inventory.nodes.length} nodes (timed)`);
  const issueLog = path.join(logsDir, 'issue.log');
  const profile = options.cpuProfile ? ['--cpu-prof', `--cpu-prof-dir=${path.join(logsDir, 'cpu-profile')}`] : [];
  const issue = await runControllerMeasured(['issue', ...common, '--out', outDir, '--output', 'json'], issueLog, {
    resourceUsage: options.resourceUsage,
    nodeOptions: profile,
    keepExtraCaCerts: options.keepExtraCaCerts,
  });
  if (issue.code !== 0) throw new BenchError(`controller issue exited with ${issue.code}; see ${issueLog}`);

  let summary: IssueJson;
  try {
    summary = JSON.parse(issue.stdout) as IssueJson;
  } catch {
    throw new BenchError(`controller issue printed no JSON summary; see ${issueLog}`);
  }
  if (summary.written.length !== inventory.nodes.length) throw new BenchError(`controller issue wrote ${summary.written.length} nodes, expected ${inventory.nodes.length}`);
  const expected = expectedIssued(inventory);
  const issued = summary.nodes.reduce((total, node) => total + node.certificatesIssued, 0);
  if (issued !== expected) throw new BenchError(`controller issue reported ${issued} certificates, expected ${expected}`);
  if (ledgerCount(stateDir) !== expected) throw new BenchError(`ledger.json lists ${ledgerCount(stateDir)} certificates, expected ${expected}`);
  // The output directory contains the node trees and manifest.json.
  const onDisk = countFiles(outDir) - 1;
  if (onDisk !== summary.files) throw new BenchError(`${outDir} contains ${onDisk} node files, but the manifest lists ${summary.files}`);
  return { storage: fileSystemOf(workdir), nodes: inventory.nodes.length, issued, files: summary.files, issue };
}

function report(options: OfflineOptions, result: OfflineResult): string {
  const run = result.issue;
  const rate = result.issued / run.wallS;

  // The issue phase starts once the inventory and the state directory are loaded.
  const loop = eventLoopFigures(run, 'issue');
  const startup = eventLoopFigures(run, 'startup');
  const loopMax = loop === undefined ? 'n/a' : loop.delayMaxMs.toFixed(1);
  const loopP99 = loop === undefined ? 'n/a' : loop.delayP99Ms.toFixed(1);
  const gapMax = loop === undefined ? 'n/a' : loop.gapMaxMs.toFixed(1);
  const startupGap = startup === undefined ? 'n/a' : startup.gapMaxMs.toFixed(1);

  const fields = [
    `N=${options.workers}`,
    `algorithm=${options.algorithm}`,
    `node_extra_ca_certs=${extraCaCerts(options.keepExtraCaCerts)}`,
    `nodes=${result.nodes}`,
    `certs=${result.issued}`,
    `keys=${result.issued}`,
    `files=${result.files}`,
    `wall_s=${seconds(run.wallS)}`,
    `certs_per_s=${rate.toFixed(1)}`,
    `controller_cpu_s=${cpuSeconds(run.cpuS)}`,
    `cpu_ms_per_cert=${run.cpuS === undefined ? 'n/a' : ((1000 * run.cpuS) / result.issued).toFixed(2)}`,
    `controller_peak_rss_mb=${megabytes(run.peakRssKb)}`,
    `loop_max_ms=${loopMax}`,
    `loop_p99_ms=${loopP99}`,
    `gap_max_ms=${gapMax}`,
    `gap_max_run_ms=${loop?.gapMaxRunMs === undefined ? 'n/a' : loop.gapMaxRunMs.toFixed(1)}`,
    `gap_max_wait_ms=${loop?.gapMaxWaitMs === undefined ? 'n/a' : loop.gapMaxWaitMs.toFixed(1)}`,
    `startup_gap_ms=${startupGap}`,
    `storage=${result.storage}`,
  ];
  const lines = [
    `kubetrust offline issue benchmark: 3 etcd + 3 masters + ${options.workers} workers = ${result.nodes} nodes, ${options.algorithm}, files on ${result.storage}`,
    `  controller issue --out     ${seconds(run.wallS).padStart(8)} s   ${result.issued} certificates and keys, ${result.files} files, ${rate.toFixed(1)} certificates per second`,
    `  controller CPU ${cpuSeconds(run.cpuS)} s, peak RSS ${megabytes(run.peakRssKb)} MB`,
    `  event loop while issuing: max delay ${loopMax} ms, p99 ${loopP99} ms, longest interval gap ${gapMax} ms; before it (inventory and state loading) ${startupGap} ms`,
  ];

  if (options.keyMedianMs !== undefined) {
    const cores = os.availableParallelism();
    const limitS = (result.issued * options.keyMedianMs) / cores / 1000;
    fields.push(`key_median_ms=${options.keyMedianMs}`, `cores=${cores}`, `limit_s=${seconds(limitS)}`, `ratio=${(run.wallS / limitS).toFixed(2)}`);
    lines.push(`  native limit ${result.issued} keys x ${options.keyMedianMs} ms / ${cores} cores = ${seconds(limitS)} s; wall time is ${(run.wallS / limitS).toFixed(2)} times that`);
  }

  lines.push(`RESULT kubetrust-offline ${fields.join(' ')}`);
  return lines.join('\n');
}

const USAGE = `usage: node test/dist/bench/offline-bench.js [options]
  --workers N                 worker nodes besides 3 etcd nodes and 3 masters, 1-${MAX_WORKERS} (default 10)
  --algorithm NAME            key algorithm of the cluster PKI: ${KEY_ALGORITHMS.join(', ')} (default RSA-2048)
  --key-median-ms MS          median milliseconds of one native key generation of that algorithm, from
                              keygen-limit.js; adds the native limit and the ratio to it
  --workdir DIR               empty or new scratch directory (default: a new directory below ${path.join(os.tmpdir(), 'kubetrust-bench')})
  --keep                      keep the scratch directory after a successful run (it is always kept after a failure)
  --resource-usage MODE       how to measure the controller's peak RSS, and its CPU time when the controller
                              writes no event-loop report with its own: time (GNU /usr/bin/time),
                              proc (sample /proc), off, or auto (time when installed, otherwise proc; the default)
  --cpu-prof                  write a V8 CPU profile of the issue run below the work directory's logs/cpu-profile
                              (implies --keep)
  --keep-node-extra-ca-certs  start the controller with this environment's NODE_EXTRA_CA_CERTS; without it the
                              controller runs without the variable, as on an admin host that does not set it
`;

function parseOptions(argv: readonly string[]): OfflineOptions | undefined {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      workers: { type: 'string', default: '10' },
      algorithm: { type: 'string', default: 'RSA-2048' },
      'key-median-ms': { type: 'string' },
      workdir: { type: 'string' },
      keep: { type: 'boolean', default: false },
      'resource-usage': { type: 'string', default: 'auto' },
      'cpu-prof': { type: 'boolean', default: false },
      'keep-node-extra-ca-certs': { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) return undefined;
  if (!(KEY_ALGORITHMS as readonly string[]).includes(values.algorithm)) {
    throw new BenchError(`--algorithm: "${values.algorithm}" is invalid; use one of ${KEY_ALGORITHMS.join(', ')}`);
  }
  let keyMedianMs: number | undefined;
  if (values['key-median-ms'] !== undefined) {
    keyMedianMs = Number(values['key-median-ms']);
    if (!Number.isFinite(keyMedianMs) || keyMedianMs <= 0) throw new BenchError(`--key-median-ms: "${values['key-median-ms']}" is invalid; pass a positive number of milliseconds`);
  }
  return {
    workers: positiveInteger(values.workers, '--workers', MAX_WORKERS),
    algorithm: values.algorithm as KeyAlgorithm,
    keyMedianMs,
    workdir: values.workdir,
    keep: values.keep || values['cpu-prof'],
    resourceUsage: resolveResourceUsage(values['resource-usage']),
    cpuProfile: values['cpu-prof'],
    keepExtraCaCerts: values['keep-node-extra-ca-certs'],
  };
}

function main(): Promise<number> {
  return runBenchMain<OfflineOptions, Awaited<ReturnType<typeof runOffline>>>({ usage: USAGE, parse: parseOptions, run: runOffline, report });
}

if (require.main === module) {
  void main().then((code) => {
    process.exitCode = process.exitCode ?? code;
  });
}
