#!/usr/bin/env node
/**
 * Bundles the compiled controller into one file, `controller/dist/cli.bundle.js`, with V8's code
 * cache for it (`cli.bundle.cache`) and a manifest of every file it was built from
 * (`cli.bundle.json`). `controller/bin/controller.js` loads the bundle through
 * `controller/bin/bundle-loader.js` while those files are unchanged. `npm run build` runs this
 * after the TypeScript build. The code cache comes from a training run of the main commands
 * (`train-code-cache.js`). When that fails, it contains every function of the bundle.
 *
 * Usage: node controller/packaging/build-bundle.js
 *
 * Some packages stay out of the bundle and load from node_modules when used:
 * - ssh2 and cpu-features, which carry native addons;
 * - @kubernetes/client-node, an ES module of about 15 MB that only the Kubernetes API commands load;
 * - prom-client with @opentelemetry/api, which only `serve` loads;
 * - protobufjs with proto-loader, which grpc-js requires only for its channelz and xDS services.
 * In the bundle, each of these would cost every command the time to read its code.
 */
'use strict';

const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const PACKAGE_DIR = path.resolve(__dirname, '..');
/** The training run takes about a second, and a hung one must not hold up the build. */
const TRAINING_TIMEOUT_MS = 120_000;
const REPO_ROOT = path.resolve(PACKAGE_DIR, '..');
const { MANIFEST_VERSION, bundlePaths } = require(path.join(PACKAGE_DIR, 'bin', 'bundle-loader.js'));
// The worker threads' scripts are loaded by path (require.resolve), never bundled.
const EXTERNAL = [
  'ssh2',
  'cpu-features',
  '@kubernetes/client-node',
  'prom-client',
  '@opentelemetry/api',
  'protobufjs',
  '@grpc/proto-loader',
  '@kubetrust/shared/dist/pki/key-worker.js',
  '@kubetrust/controller/dist/stage-worker.js',
];

/**
 * The files the loader checks before it uses the bundle: every compiled file of the workspace, and
 * of each package from node_modules only its package.json, whose version changes with any update.
 * Checking all 350-odd files took about 10 ms per command; these take about 1 ms.
 */
function manifestFiles(inputs) {
  const files = new Set();
  for (const input of inputs) {
    const match = /^(.*node_modules\/(?:@[^/]+\/)?[^/]+)\//.exec(input);
    files.add(match === null ? input : `${match[1]}/package.json`);
  }
  return files;
}

/**
 * Writes the bundle's code cache from a training run in a child process, or, when that fails, a
 * cache of every function. Returns which one it wrote.
 */
function writeCodeCache(paths) {
  const trainer = path.join(PACKAGE_DIR, 'packaging', 'train-code-cache.js');
  const training = spawnSync(process.execPath, [trainer, PACKAGE_DIR, paths.codeCache], {
    stdio: ['ignore', 'ignore', 'pipe'],
    encoding: 'utf8',
    timeout: TRAINING_TIMEOUT_MS,
  });
  if (training.status === 0 && fs.existsSync(paths.codeCache)) return 'trained on a distribute to three local agents';
  const reason = training.error?.message ?? (training.stderr.trim().split('\n').pop() || `exit status ${training.status ?? training.signal}`);
  process.stderr.write(`warning: the code cache training run failed (${reason}); caching every function of the bundle instead\n`);
  execFileSync(process.execPath, ['-e', `require(${JSON.stringify(path.join(PACKAGE_DIR, 'bin', 'bundle-loader.js'))}).writeCodeCache(${JSON.stringify(PACKAGE_DIR)})`], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  return 'every function';
}

async function main() {
  const started = Date.now();
  const paths = bundlePaths(PACKAGE_DIR);
  if (!fs.existsSync(paths.modules)) throw new Error(`${paths.modules} is missing; run the TypeScript build (tsc -b) first`);
  // Without a manifest the loader uses the compiled modules, so a build that stops halfway leaves
  // nothing stale behind.
  fs.rmSync(paths.manifest, { force: true });
  fs.rmSync(paths.codeCache, { force: true });

  const esbuild = require('esbuild');
  const temporary = `${paths.bundle}.tmp-${process.pid}`;
  const result = await esbuild.build({
    entryPoints: [paths.modules],
    outfile: temporary,
    bundle: true,
    platform: 'node',
    target: `node${process.versions.node.split('.')[0]}`,
    format: 'cjs',
    external: EXTERNAL,
    minifyWhitespace: true,
    minifySyntax: true,
    // Names stay as written except where two modules use the same one. Keeping those too wraps
    // every function in a call at load, about 3 ms of CPU per command.
    keepNames: false,
    legalComments: 'none',
    logLevel: 'warning',
    metafile: true,
    absWorkingDir: REPO_ROOT,
  });
  if (result.errors.length > 0) throw new Error(`esbuild failed with ${result.errors.length} error(s)`);
  // The loader compiles the bundle as a vm.Script, in which import() fails at run time. TypeScript
  // compiles import() of the sources to require(), so only a dependency could bring one in.
  for (const [input, { imports }] of Object.entries(result.metafile.inputs)) {
    const dynamic = imports.find((imported) => imported.kind === 'dynamic-import' && imported.external);
    if (dynamic !== undefined) throw new Error(`${input} loads ${dynamic.path} with import(), which the bundle loader cannot run; bundle it or load it with require()`);
  }
  fs.renameSync(temporary, paths.bundle);

  const cacheKind = writeCodeCache(paths);

  const inputs = [...manifestFiles(Object.keys(result.metafile.inputs))].sort().map((input) => {
    const stat = fs.statSync(path.join(REPO_ROOT, input));
    return [input, stat.size, stat.mtimeMs];
  });
  const manifest = { version: MANIFEST_VERSION, root: path.relative(path.dirname(paths.manifest), REPO_ROOT), inputs };
  const manifestTemporary = `${paths.manifest}.tmp-${process.pid}`;
  fs.writeFileSync(manifestTemporary, `${JSON.stringify(manifest)}\n`);
  fs.renameSync(manifestTemporary, paths.manifest);

  const bundleKb = Math.round(fs.statSync(paths.bundle).size / 1024);
  const cacheKb = Math.round(fs.statSync(paths.codeCache).size / 1024);
  process.stdout.write(`controller bundle: ${inputs.length} files, ${bundleKb} KiB, code cache ${cacheKb} KiB (${cacheKind}), in ${Date.now() - started} ms\n`);
}

main().catch((error) => {
  process.stderr.write(`error: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
});
