#!/usr/bin/env node
/**
 * Builds the single-file agent executable: a Node.js single executable application (SEA) made of
 * the Node.js binary that runs this script and an esbuild bundle of the compiled agent. The
 * executable needs no Node.js, no node_modules and no other file on the node. Run it through `npm run package:agent`, which compiles the workspace first.
 *
 * Usage: node agent/packaging/build-artifact.js [--out DIR]
 *
 * Writes to DIR (default agent/artifact):
 *   kubetrust-agent-linux-<arch>         the executable, for the arch of this machine only
 *   kubetrust-agent-linux-<arch>.sha256  its digest in the format of `sha256sum`
 *   manifest.json                        version and the list of built arches, which
 *                                        controller/src/agent-artifact.ts reads
 *
 * Node.js can build a SEA only from its own binary, so an executable for another arch must be
 * built on a machine of that arch. Entries of other arches in an existing manifest are kept while
 * their files are still there, so artefacts built elsewhere can be copied into DIR.
 */
'use strict';

const { execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const REPO_ROOT = path.resolve(__dirname, '..', '..');
const ENTRY = path.join(REPO_ROOT, 'agent', 'dist', 'single-executable.js');
const DEFAULT_OUT = path.join(REPO_ROOT, 'agent', 'artifact');
const MANIFEST_FILE = 'manifest.json';
// The resource name and fuse that Node.js looks for in its binary (Node.js documentation,
// "Single executable applications", v20).
const SEA_RESOURCE = 'NODE_SEA_BLOB';
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
/** `uname -m` of each Node.js arch that the executable can be built for. */
const MACHINE_OF_ARCH = { x64: 'x86_64', arm64: 'aarch64' };

function parseArguments(argv) {
  let out = DEFAULT_OUT;
  for (let index = 0; index < argv.length; index++) {
    if (argv[index] === '--out' && argv[index + 1] !== undefined) {
      out = path.resolve(argv[++index]);
    } else {
      throw new Error(`invalid argument ${JSON.stringify(argv[index])}; usage: build-artifact.js [--out DIR]`);
    }
  }
  return { out };
}

/**
 * Replaces KeyPool in the bundle. Its worker thread loads key-worker.js by path, and a single
 * executable can load no file but itself. The agent generates its keys with crypto.generateKeyPair
 * and never uses KeyPool, so the stub only turns a future use into a clear error.
 */
const keyPoolStub = {
  name: 'kubetrust-key-pool-stub',
  setup(build) {
    build.onLoad({ filter: /[\\/]shared[\\/]dist[\\/]pki[\\/]key-pool\.js$/ }, () => ({
      loader: 'js',
      contents:
        "'use strict';\n" +
        'class KeyPool {\n' +
        '  constructor() {\n' +
        "    throw new Error('KeyPool is not available in the single-file agent, because its worker thread loads key-worker.js from a file');\n" +
        '  }\n' +
        '}\n' +
        'exports.KeyPool = KeyPool;\n',
    }));
  },
};

async function bundle(workDir) {
  const esbuild = require('esbuild');
  const outfile = path.join(workDir, 'agent.js');
  const result = await esbuild.build({
    entryPoints: [ENTRY],
    outfile,
    bundle: true,
    platform: 'node',
    target: `node${process.versions.node.split('.')[0]}`,
    format: 'cjs',
    minify: false,
    legalComments: 'inline',
    logLevel: 'warning',
    metafile: true,
    plugins: [keyPoolStub],
  });
  if (result.errors.length > 0) throw new Error(`esbuild failed with ${result.errors.length} error(s)`);
  // A worker thread loads its script from a file, which would fail only at run time on the node,
  // so the build fails here instead.
  for (const [input, { imports }] of Object.entries(result.metafile.inputs)) {
    if (imports.some((imported) => imported.path === 'worker_threads' || imported.path === 'node:worker_threads')) {
      throw new Error(`${input} in the agent bundle imports worker_threads, but a single executable cannot start a worker thread from a file`);
    }
  }
  return outfile;
}

function seaBlob(workDir, bundleFile) {
  const blob = path.join(workDir, 'sea-prep.blob');
  const config = {
    main: bundleFile,
    output: blob,
    disableExperimentalSEAWarning: true,
    useSnapshot: false,
    useCodeCache: false,
  };
  const configFile = path.join(workDir, 'sea-config.json');
  fs.writeFileSync(configFile, JSON.stringify(config, null, 2));
  try {
    execFileSync(process.execPath, ['--experimental-sea-config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (error) {
    process.stderr.write(String(error.stdout ?? '') + String(error.stderr ?? ''));
    throw new Error(`node --experimental-sea-config ${configFile} failed`);
  }
  return blob;
}

/** Removes the symbol tables and debug sections with `strip`, about 13 MB of Node.js 20.20. Returns whether it ran. */
function strip(file) {
  try {
    execFileSync('strip', ['--strip-all', file], { stdio: ['ignore', 'inherit', 'inherit'] });
    return true;
  } catch (error) {
    if (error.code !== 'ENOENT') throw error;
    process.stderr.write('note: strip (GNU binutils) is not installed, so the executable keeps its symbols and is about 13 MB larger\n');
    return false;
  }
}

/**
 * Injects the blob with the postject command. It runs as a child process because postject prints
 * "Can't find string offset for section name '.note'" for the notes sections of every Node.js 20
 * binary tried, and still writes one that runs, so its messages are shown only when it fails.
 */
function inject(executable, blob) {
  const cli = require.resolve('postject/dist/cli.js');
  try {
    execFileSync(process.execPath, [cli, executable, SEA_RESOURCE, blob, '--sentinel-fuse', SEA_FUSE], { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (error) {
    process.stderr.write(String(error.stdout ?? '') + String(error.stderr ?? ''));
    throw new Error(`postject failed to inject the agent into ${executable}`);
  }
}

function sha256OfFile(file) {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

function readManifest(file) {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (error) {
    if (error.code === 'ENOENT') return undefined;
    throw new Error(`cannot read ${file}: ${error.message}; remove it and build again`);
  }
}

/** Writes through a temporary name and a rename, so a reader never sees half a file. */
function writeFileAtomic(file, data, mode) {
  const temporary = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(temporary, data, { mode });
  fs.renameSync(temporary, file);
}

async function main() {
  const started = Date.now();
  const { out } = parseArguments(process.argv.slice(2));
  const arch = process.arch;
  if (process.platform !== 'linux' || MACHINE_OF_ARCH[arch] === undefined) {
    throw new Error(`cannot build the agent executable on ${process.platform}/${arch}; build it on Linux x86_64 or aarch64`);
  }
  if (!fs.existsSync(ENTRY)) throw new Error(`${ENTRY} is missing; run npm run build first`);
  const { AGENT_VERSION } = require(path.join(REPO_ROOT, 'agent', 'dist', 'version.js'));

  fs.mkdirSync(out, { recursive: true });
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-agent-build-'));
  try {
    const bundleFile = await bundle(workDir);
    const blob = seaBlob(workDir, bundleFile);

    const name = `kubetrust-agent-linux-${arch}`;
    const staged = path.join(workDir, name);
    fs.copyFileSync(process.execPath, staged);
    fs.chmodSync(staged, 0o755);
    const stripped = strip(staged);
    inject(staged, blob);

    const sha256 = sha256OfFile(staged);
    const bytes = fs.statSync(staged).size;
    const target = path.join(out, name);
    fs.copyFileSync(staged, `${target}.tmp-${process.pid}`);
    fs.chmodSync(`${target}.tmp-${process.pid}`, 0o755);
    fs.renameSync(`${target}.tmp-${process.pid}`, target);
    writeFileAtomic(`${target}.sha256`, `${sha256}  ${name}\n`, 0o644);

    const manifestFile = path.join(out, MANIFEST_FILE);
    const previous = readManifest(manifestFile);
    const otherArches = (previous?.artifacts ?? []).filter((entry) => entry.arch !== arch && fs.existsSync(path.join(out, entry.file)));
    const entry = { arch, machine: MACHINE_OF_ARCH[arch], file: name, bytes, sha256, node: process.version, stripped, builtAt: new Date().toISOString() };
    const manifest = { version: AGENT_VERSION, artifacts: [...otherArches, entry].sort((a, b) => a.arch.localeCompare(b.arch)) };
    writeFileAtomic(manifestFile, JSON.stringify(manifest, null, 2) + '\n', 0o644);

    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    process.stdout.write(`Built ${target} (${(bytes / 1024 / 1024).toFixed(1)} MiB, sha256 ${sha256}, agent ${AGENT_VERSION}, Node.js ${process.version}) in ${seconds} s\n`);
  } finally {
    fs.rmSync(workDir, { recursive: true, force: true });
  }
}

main().catch((error) => {
  process.stderr.write(`error: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
});
