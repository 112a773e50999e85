#!/usr/bin/env node
/**
 * Stand-in for `systemctl restart kube-apiserver` on a simulated master. It stops the server started
 * earlier (by the PID in its pid file) and starts a new one. The new one serves `/readyz` over HTTPS
 * on the master's address, with the apiserver certificate installed below the node's install root.
 * It requires a client certificate signed by the cluster CA, as an apiserver that refuses anonymous
 * requests does. `/readyz` returns 200, or 500 while the serving certificate names
 * `unhealthyName`, so a test can make a new certificate fail the health gate.
 *
 *   node readyz-service.js restart SPEC.json
 *   node readyz-service.js stop SPEC.json
 */
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as net from 'node:net';
import { stopPidFile } from './pid-file';

export interface ReadyzSpec {
  readonly address: string;
  readonly port: number;
  /** Host paths of the serving certificate and key, and of the CA file that verifies clients. */
  readonly certFile: string;
  readonly keyFile: string;
  readonly clientCaFile: string;
  readonly pidFile: string;
  readonly logFile: string;
  /** A DNS name that makes /readyz fail while the serving certificate lists it. */
  readonly unhealthyName: string;
}

const START_TIMEOUT_MS = 10_000;

function stop(spec: ReadyzSpec): Promise<void> {
  return stopPidFile(spec.pidFile);
}

/** Resolves once the port accepts connections; rejects after START_TIMEOUT_MS. */
async function waitListening(spec: ReadyzSpec): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = net.connect({ host: spec.address, port: spec.port });
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (open) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${spec.address}:${spec.port} after ${START_TIMEOUT_MS} ms; see ${spec.logFile}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function restart(spec: ReadyzSpec, specFile: string): Promise<void> {
  await stop(spec);
  const log = fs.openSync(spec.logFile, 'a');
  const child = spawn(process.execPath, [__filename, 'serve', specFile], { detached: true, stdio: ['ignore', log, log] });
  if (child.pid === undefined) throw new Error('cannot start the readyz server');
  fs.writeFileSync(spec.pidFile, String(child.pid));
  child.unref();
  await waitListening(spec);
}

function serve(spec: ReadyzSpec): void {
  const cert = fs.readFileSync(spec.certFile);
  const unhealthy = (new crypto.X509Certificate(cert).subjectAltName ?? '').split(', ').includes(`DNS:${spec.unhealthyName}`);
  const server = https.createServer(
    { cert, key: fs.readFileSync(spec.keyFile), ca: fs.readFileSync(spec.clientCaFile), requestCert: true, rejectUnauthorized: true },
    (request, response) => {
      if (request.url !== '/readyz') {
        response.writeHead(404).end('not found\n');
      } else if (unhealthy) {
        response.writeHead(500).end(`[-]serving-certificate failed: names ${spec.unhealthyName}\nreadyz check failed\n`);
      } else {
        response.writeHead(200).end('ok\n');
      }
    },
  );
  server.listen(spec.port, spec.address);
  process.once('SIGTERM', () => server.close(() => process.exit(0)));
}

async function main(): Promise<void> {
  const [command, specFile] = process.argv.slice(2);
  if ((command !== 'restart' && command !== 'stop' && command !== 'serve') || specFile === undefined) {
    process.stderr.write('usage: readyz-service.js restart|stop|serve SPEC.json\n');
    process.exit(2);
  }
  const spec = JSON.parse(fs.readFileSync(specFile, 'utf8')) as ReadyzSpec;
  if (command === 'serve') serve(spec);
  else await (command === 'restart' ? restart(spec, specFile) : stop(spec));
}

if (require.main === module) {
  main().catch((error: unknown) => {
    process.stderr.write(`readyz-service: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  });
}
