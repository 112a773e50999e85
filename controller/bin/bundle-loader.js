'use strict';
/**
 * Loads the controller from its one-file bundle, `dist/cli.bundle.js`, which
 * `controller/packaging/build-bundle.js` writes at the end of `npm run build`, together with V8's
 * code cache for it. Loading and compiling the compiled modules one by one (about 370 files) took
 * about 0.15 s of CPU on every command. The bundle with its code cache takes about a third of that.
 *
 * The bundle is used only while every compiled file it was built from is unchanged (size and
 * modification time, listed in `dist/cli.bundle.json`). After a plain `tsc -b`, or when a file is
 * missing, the controller loads the compiled modules instead, so it never runs stale code. A code
 * cache that V8 rejects (another Node.js version) only costs the compile time it would have saved.
 */
const fs = require('node:fs');
const Module = require('node:module');
const path = require('node:path');
const vm = require('node:vm');

const MANIFEST_VERSION = 1;

/** Paths of the bundle, its manifest and its code cache inside a controller package directory. */
function bundlePaths(packageDir) {
  const dist = path.join(path.resolve(packageDir), 'dist');
  return {
    bundle: path.join(dist, 'cli.bundle.js'),
    manifest: path.join(dist, 'cli.bundle.json'),
    codeCache: path.join(dist, 'cli.bundle.cache'),
    modules: path.join(dist, 'cli.js'),
  };
}

/** Checks that the manifest exists and every input it lists still has its recorded size and mtime. */
function bundleIsCurrent(manifestFile) {
  let manifest;
  try {
    manifest = JSON.parse(fs.readFileSync(manifestFile, 'utf8'));
  } catch {
    return false;
  }
  if (manifest === null || manifest.version !== MANIFEST_VERSION || !Array.isArray(manifest.inputs)) return false;
  const root = path.resolve(path.dirname(manifestFile), manifest.root ?? '.');
  for (const input of manifest.inputs) {
    if (!Array.isArray(input) || input.length !== 3) return false;
    const [relative, size, mtimeMs] = input;
    // No exception for a missing file: this runs for every input at every start.
    const stat = fs.statSync(path.join(root, relative), { throwIfNoEntry: false });
    if (stat === undefined || stat.size !== size || stat.mtimeMs !== mtimeMs) return false;
  }
  return true;
}

function readIfExists(file) {
  try {
    return fs.readFileSync(file);
  } catch (error) {
    if (error.code === 'ENOENT') return undefined;
    throw error;
  }
}

/** Compiles the bundle as a CommonJS module would be, with the code cache if there is one. */
function compileBundle(bundleFile, codeCacheFile) {
  const source = fs.readFileSync(bundleFile, 'utf8');
  const cachedData = codeCacheFile === undefined ? undefined : readIfExists(codeCacheFile);
  // The build refuses a bundle with an import() expression, which a vm.Script could not run.
  return new vm.Script(Module.wrap(source), { filename: bundleFile, cachedData });
}

/** Runs a compiled bundle and returns its exports. */
function runBundle(script, bundleFile) {
  const bundleModule = new Module(bundleFile, module);
  bundleModule.filename = bundleFile;
  bundleModule.paths = Module._nodeModulePaths(path.dirname(bundleFile));
  const wrapper = script.runInThisContext({ displayErrors: true });
  wrapper.call(bundleModule.exports, bundleModule.exports, Module.createRequire(bundleFile), bundleModule, bundleFile, path.dirname(bundleFile));
  bundleModule.loaded = true;
  return bundleModule.exports;
}

/**
 * Returns the exports of the controller's CLI module: from the bundle when it is current, from the
 * compiled modules otherwise. `source` in the result is `bundle` or `modules`. `codeCache` is
 * `accepted` when V8 used the code cache, `rejected` when it did not and `none` without one.
 */
function loadController(packageDir) {
  const paths = bundlePaths(packageDir);
  if (bundleIsCurrent(paths.manifest)) {
    const script = compileBundle(paths.bundle, paths.codeCache);
    let codeCache = 'accepted';
    if (script.cachedDataRejected === undefined) codeCache = 'none';
    else if (script.cachedDataRejected) codeCache = 'rejected';
    return { exports: runBundle(script, paths.bundle), source: 'bundle', codeCache };
  }
  return { exports: require(paths.modules), source: 'modules', codeCache: 'none' };
}

/**
 * Writes a code cache of every function of the bundle. The build uses it when its training run
 * (`controller/packaging/train-code-cache.js`) fails. The bundle is compiled with lazy compilation
 * off, so no command compiles any of the bundle's code while it runs. The flag is back on before the
 * cache is made, because V8 accepts a cache only under the flags it was made with.
 */
function writeCodeCache(packageDir) {
  const v8 = require('node:v8');
  const paths = bundlePaths(packageDir);
  v8.setFlagsFromString('--no-lazy');
  let script;
  try {
    script = compileBundle(paths.bundle, undefined);
  } finally {
    v8.setFlagsFromString('--lazy');
  }
  const temporary = `${paths.codeCache}.tmp-${process.pid}`;
  fs.writeFileSync(temporary, script.createCachedData());
  fs.renameSync(temporary, paths.codeCache);
}

module.exports = { MANIFEST_VERSION, bundleIsCurrent, bundlePaths, compileBundle, loadController, runBundle, writeCodeCache };
