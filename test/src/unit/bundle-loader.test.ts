/**
 * The controller's bundle loader: it runs the one-file bundle only while every file the bundle was
 * built from is unchanged, falls back to the compiled modules otherwise, and survives a code cache
 * that V8 rejects. The last tests check the bundle that `npm run build` wrote for this checkout.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

interface LoadResult {
  readonly exports: Record<string, unknown>;
  readonly source: 'bundle' | 'modules';
  readonly codeCache: 'accepted' | 'rejected' | 'none';
}

interface CompiledBundle {
  readonly cachedDataRejected?: boolean;
  createCachedData(): Buffer;
}

interface BundleLoader {
  readonly MANIFEST_VERSION: number;
  bundlePaths(packageDir: string): { bundle: string; manifest: string; codeCache: string; modules: string };
  compileBundle(bundleFile: string, codeCacheFile: string | undefined): CompiledBundle;
  loadController(packageDir: string): LoadResult;
  writeCodeCache(packageDir: string): void;
}

const REPO_ROOT = path.resolve(__dirname, '..', '..', '..');
const CONTROLLER_DIR = path.join(REPO_ROOT, 'controller');
const loader = require(path.join(CONTROLLER_DIR, 'bin', 'bundle-loader.js')) as BundleLoader;

/** Creates a package directory with two compiled modules, a bundle that exports `from: 'bundle'` and a manifest of the inputs. */
function fakePackage(): { dir: string; inputs: string[] } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-bundle-loader-'));
  fs.mkdirSync(path.join(dir, 'dist'));
  fs.writeFileSync(path.join(dir, 'dist', 'cli.js'), "exports.from = 'modules';\n");
  fs.writeFileSync(path.join(dir, 'dist', 'helper.js'), "exports.helper = 'helper';\n");
  fs.writeFileSync(
    path.join(dir, 'dist', 'cli.bundle.js'),
    [
      "exports.from = 'bundle';",
      "exports.helper = require('./helper.js').helper;",
      'exports.dirname = __dirname;',
      '',
    ].join('\n'),
  );
  const inputs = ['dist/cli.js', 'dist/helper.js'];
  writeManifest(dir, inputs);
  return { dir, inputs };
}

function writeManifest(dir: string, inputs: readonly string[], version = loader.MANIFEST_VERSION): void {
  const entries = inputs.map((input) => {
    const stat = fs.statSync(path.join(dir, input));
    return [input, stat.size, stat.mtimeMs];
  });
  fs.writeFileSync(path.join(dir, 'dist', 'cli.bundle.json'), JSON.stringify({ version, root: '..', inputs: entries }));
}

/** Loads a package in a new Node.js process and returns what the loader reported. */
function loadInChild(dir: string): unknown {
  const script = `const r = require(${JSON.stringify(path.join(CONTROLLER_DIR, 'bin', 'bundle-loader.js'))}).loadController(${JSON.stringify(dir)});
process.stdout.write(JSON.stringify({ source: r.source, codeCache: r.codeCache, from: r.exports.from }));`;
  const result = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
  assert.equal(result.status, 0, result.stderr);
  return JSON.parse(result.stdout);
}

describe('controller bundle loader', () => {
  const temporaryDirs: string[] = [];
  const fresh = (): { dir: string; inputs: string[] } => {
    const created = fakePackage();
    temporaryDirs.push(created.dir);
    return created;
  };
  after(() => {
    for (const dir of temporaryDirs) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('runs the bundle while its inputs are unchanged, with require and __dirname working', () => {
    const { dir } = fresh();
    const loaded = loader.loadController(dir);
    assert.equal(loaded.source, 'bundle');
    assert.equal(loaded.exports.from, 'bundle');
    assert.equal(loaded.exports.helper, 'helper');
    assert.equal(loaded.exports.dirname, path.join(dir, 'dist'));
  });

  it('stale or missing manifest loads modules', () => {
    const changed = fresh();
    const later = new Date(Date.now() + 5_000);
    fs.utimesSync(path.join(changed.dir, 'dist', 'helper.js'), later, later);
    assert.equal(loader.loadController(changed.dir).source, 'modules');
    assert.equal(loader.loadController(changed.dir).exports.from, 'modules');

    const resized = fresh();
    fs.appendFileSync(path.join(resized.dir, 'dist', 'cli.js'), '// one more line\n');
    assert.equal(loader.loadController(resized.dir).source, 'modules');

    const missing = fresh();
    fs.rmSync(path.join(missing.dir, 'dist', 'helper.js'));
    writeManifest(missing.dir, ['dist/cli.js']);
    fs.writeFileSync(
      path.join(missing.dir, 'dist', 'cli.bundle.json'),
      fs.readFileSync(path.join(missing.dir, 'dist', 'cli.bundle.json'), 'utf8').replace('"inputs":[', '"inputs":[["dist/helper.js",27,1],'),
    );
    assert.equal(loader.loadController(missing.dir).source, 'modules');

    const broken = fresh();
    fs.writeFileSync(path.join(broken.dir, 'dist', 'cli.bundle.json'), '{"version": 1, "inputs": ');
    assert.equal(loader.loadController(broken.dir).source, 'modules');

    const otherVersion = fresh();
    writeManifest(otherVersion.dir, otherVersion.inputs, loader.MANIFEST_VERSION + 1);
    assert.equal(loader.loadController(otherVersion.dir).source, 'modules');

    const noManifest = fresh();
    fs.rmSync(path.join(noManifest.dir, 'dist', 'cli.bundle.json'));
    assert.equal(loader.loadController(noManifest.dir).source, 'modules');
  });

  it('code cache accepted and rejected', () => {
    const { dir } = fresh();
    assert.deepStrictEqual(loadInChild(dir), { source: 'bundle', codeCache: 'none', from: 'bundle' });
    loader.writeCodeCache(dir);
    const cacheFile = loader.bundlePaths(dir).codeCache;
    assert.ok(fs.statSync(cacheFile).size > 0);
    // Each load runs in a new process: V8 keeps compiled scripts per process and would not read
    // the cache a second time.
    assert.deepStrictEqual(loadInChild(dir), { source: 'bundle', codeCache: 'accepted', from: 'bundle' });
    fs.writeFileSync(cacheFile, Buffer.from('not a V8 code cache'));
    assert.deepStrictEqual(loadInChild(dir), { source: 'bundle', codeCache: 'rejected', from: 'bundle' });
  });

  it('finds the bundle of this build current, with a code cache V8 accepts', () => {
    const script = `const r = require(${JSON.stringify(path.join(CONTROLLER_DIR, 'bin', 'bundle-loader.js'))}).loadController(${JSON.stringify(CONTROLLER_DIR)});
process.stdout.write(JSON.stringify({ source: r.source, codeCache: r.codeCache, runController: typeof r.exports.runController }));`;
    const result = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    assert.equal(result.status, 0, result.stderr);
    assert.deepStrictEqual(JSON.parse(result.stdout), { source: 'bundle', codeCache: 'accepted', runController: 'function' }, 'npm run build did not leave a current controller bundle with an accepted code cache');
  });

  it('trains an accepted code cache', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-code-cache-'));
    temporaryDirs.push(dir);
    const trained = path.join(dir, 'trained.cache');
    const training = spawnSync(process.execPath, [path.join(CONTROLLER_DIR, 'packaging', 'train-code-cache.js'), CONTROLLER_DIR, trained], { encoding: 'utf8' });
    assert.equal(training.status, 0, training.stderr);
    const bundle = loader.bundlePaths(CONTROLLER_DIR).bundle;
    assert.equal(loader.compileBundle(bundle, trained).cachedDataRejected, false);

    // Compiled but not run, the bundle caches its top-level code only; with lazy compilation off,
    // every function. The trained cache lies between: the top level and what the commands ran.
    const topLevel = loader.compileBundle(bundle, undefined).createCachedData().length;
    fs.mkdirSync(path.join(dir, 'dist'));
    fs.copyFileSync(bundle, path.join(dir, 'dist', 'cli.bundle.js'));
    loader.writeCodeCache(dir);
    const everyFunction = fs.statSync(loader.bundlePaths(dir).codeCache).size;
    const trainedSize = fs.statSync(trained).size;
    assert.ok(trainedSize > topLevel * 1.5, `the trained cache (${trainedSize} bytes) is hardly larger than the top level's (${topLevel} bytes)`);
    assert.ok(trainedSize < everyFunction, `the trained cache (${trainedSize} bytes) is not smaller than the cache of every function (${everyFunction} bytes)`);
  });

  it('runs the controller command from the bundle without loading the compiled modules', () => {
    const probe = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'kubetrust-bundle-probe-')), 'probe.js');
    temporaryDirs.push(path.dirname(probe));
    // At exit, the probe prints every loaded file of the compiled controller, shared or proto packages.
    const probeScript = [
      "const compiled = /[\\\\/](controller|shared|proto)[\\\\/]dist[\\\\/]/;",
      "process.on('exit', () => {",
      "  const loaded = Object.keys(require.cache).filter((file) => compiled.test(file));",
      "  process.stderr.write('PROBE ' + JSON.stringify(loaded) + '\\n');",
      '});',
      '',
    ].join('\n');
    fs.writeFileSync(probe, probeScript);
    const result = spawnSync(process.execPath, ['--require', probe, path.join(CONTROLLER_DIR, 'bin', 'controller.js'), '--version'], { encoding: 'utf8' });
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, /^\d+\.\d+\.\d+/);
    const line = result.stderr.split('\n').find((text) => text.startsWith('PROBE '));
    assert.ok(line !== undefined, result.stderr);
    assert.deepStrictEqual(JSON.parse(line.slice('PROBE '.length)), []);
  });
});
