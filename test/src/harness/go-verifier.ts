/**
 * Runs the Go verifier in test/go/verifier, which judges certificates with Go's crypto/x509. That
 * is the library kube-apiserver, the kubelet and etcd verify their peers with. The verifier is
 * compiled once per test process into the temporary directory, under a name derived from its
 * source and the Go version, so a later run with the same source reuses the binary.
 */
import { execFile, spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** Directory of the verifier's Go module. Both `dist/harness` and `src/harness` are two levels below test/. */
export const GO_VERIFIER_SOURCE = path.resolve(__dirname, '..', '..', 'go', 'verifier');

export type GoKeyUsage = 'serverAuth' | 'clientAuth' | 'any';

export interface GoCheck {
  /** Unique within one call. */
  readonly name: string;
  /** The certificate to judge, optionally followed by the chain that a server would send with it. */
  readonly certPem: string;
  /** Trusted CA certificates. The verifier never uses the system roots. */
  readonly roots: readonly string[];
  readonly intermediates?: readonly string[];
  /** Every listed usage must be allowed by the whole chain; each one is verified on its own. */
  readonly keyUsages: readonly GoKeyUsage[];
  /** Names for `VerifyHostname`. An IP address here is an error, because it belongs in `ips`. */
  readonly dnsNames?: readonly string[];
  readonly ips?: readonly string[];
  /** Verification time, or the current time when absent. */
  readonly at?: Date;
  /** Private key that `tls.X509KeyPair(certPem, keyPem)` must accept with the certificate. */
  readonly keyPem?: string;
}

export interface GoResult {
  readonly name: string;
  readonly ok: boolean;
  /** Go's error messages, each prefixed with the step that failed, such as `verify for clientAuth:`. */
  readonly errors: readonly string[];
}

/** Environment for `go`: nothing is downloaded, and caches live in the temporary directory. */
function goEnvironment(): NodeJS.ProcessEnv {
  return {
    ...process.env,
    GOCACHE: process.env.GOCACHE ?? path.join(os.tmpdir(), 'kubetrust-go-cache'),
    GOPATH: process.env.GOPATH ?? path.join(os.tmpdir(), 'kubetrust-gopath'),
    GOPROXY: 'off',
    GOTOOLCHAIN: 'local',
    GOFLAGS: '',
    GOWORK: 'off',
    GO111MODULE: 'on',
    // Debian's golang-go does not pull in a C compiler, and the verifier needs no cgo.
    CGO_ENABLED: '0',
  };
}

function run(command: string, args: readonly string[], options: { cwd?: string; env?: NodeJS.ProcessEnv }): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { ...options, timeout: 300_000, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error !== null && (error as NodeJS.ErrnoException).code === 'ENOENT') {
        reject(new Error('go is not installed: install the Debian package golang-go (`.ci/run` installs it)'));
        return;
      }
      let code = 0;
      if (error !== null) code = typeof error.code === 'number' ? error.code : 1;
      resolve({ code, stdout, stderr });
    });
  });
}

/** SHA-256 over the module's file names and contents and the Go version that compiles them. */
function sourceDigest(goVersion: string): string {
  const hash = crypto.createHash('sha256').update(goVersion);
  const files = fs
    .readdirSync(GO_VERIFIER_SOURCE)
    .filter((name) => name.endsWith('.go') || name === 'go.mod' || name === 'go.sum')
    .sort();
  for (const name of files) {
    hash.update(`\0${name}\0`).update(fs.readFileSync(path.join(GO_VERIFIER_SOURCE, name)));
  }
  return hash.digest('hex').slice(0, 16);
}

async function build(): Promise<string> {
  const env = goEnvironment();
  const version = await run('go', ['version'], { env });
  if (version.code !== 0) throw new Error(`go version failed (exit ${version.code}): ${version.stderr}`);

  const binary = path.join(os.tmpdir(), 'kubetrust-go-verifier', sourceDigest(version.stdout.trim()), 'verifier');
  if (fs.existsSync(binary)) return binary;

  fs.mkdirSync(path.dirname(binary), { recursive: true });
  // Build under a unique name and rename, so a concurrent run never executes a half-written file.
  const partial = `${binary}.${process.pid}.partial`;
  const result = await run('go', ['build', '-trimpath', '-o', partial, '.'], { cwd: GO_VERIFIER_SOURCE, env });
  if (result.code !== 0) {
    fs.rmSync(partial, { force: true });
    throw new Error(`go build in ${GO_VERIFIER_SOURCE} failed (exit ${result.code}):\n${result.stdout}${result.stderr}`);
  }
  fs.renameSync(partial, binary);
  return binary;
}

let built: Promise<string> | undefined;

/** Compiles the verifier on first use and returns the binary's path. Later calls share that build. */
export function goVerifierBinary(): Promise<string> {
  if (built === undefined) {
    built = build();
    // A failed build is not cached, so the next test reports the same failure instead of a stale one.
    built.catch(() => {
      built = undefined;
    });
  }
  return built;
}

function execute(binary: string, input: string): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(binary, [], { stdio: ['pipe', 'pipe', 'pipe'] });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    child.once('error', reject);
    child.once('close', (code, signal) => {
      resolve({ code, signal, stdout: Buffer.concat(stdout).toString('utf8'), stderr: Buffer.concat(stderr).toString('utf8') });
    });
    child.stdin.end(input);
  });
}

/**
 * Judges every check with Go and returns one result per check, in order. A certificate that Go
 * rejects gives a result with `ok: false`. The promise rejects only when `go` is missing, the build
 * fails, the verifier rejects the request, or its output does not match the checks.
 */
export async function verifyWithGo(checks: readonly GoCheck[]): Promise<GoResult[]> {
  const binary = await goVerifierBinary();
  const request = {
    checks: checks.map((check) => ({
      name: check.name,
      certPem: check.certPem,
      roots: check.roots,
      intermediates: check.intermediates ?? [],
      keyUsages: check.keyUsages,
      dnsNames: check.dnsNames ?? [],
      ips: check.ips ?? [],
      at: check.at === undefined ? '' : check.at.toISOString(),
      keyPem: check.keyPem ?? '',
    })),
  };
  const output = await execute(binary, JSON.stringify(request));
  if (output.code !== 0 && output.code !== 1) {
    throw new Error(`Go verifier exited with ${output.code ?? output.signal}: ${output.stderr}`);
  }

  const results = output.stdout
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as GoResult);
  const returned = results.map((result) => result.name);
  const requested = checks.map((check) => check.name);
  if (JSON.stringify(returned) !== JSON.stringify(requested)) {
    throw new Error(`Go verifier returned results for [${returned.join(', ')}], expected [${requested.join(', ')}]`);
  }
  const allPassed = results.every((result) => result.ok);
  if (allPassed !== (output.code === 0)) {
    throw new Error(`Go verifier exited with ${output.code} but ${allPassed ? 'every' : 'not every'} check passed`);
  }
  return results;
}
