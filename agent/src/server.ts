/**
 * The agent's gRPC server. It listens with mutual TLS on the management plane and serves a call
 * only when the client certificate carries the controller identity this agent was enrolled with.
 *
 * Reads: the agent configuration and the files below its install root.
 * Writes: files below the install root, staged keys and backups in its state directory.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import {
  ErrorReason,
  agentError,
  loadAgentProto,
  type AgentHandlers,
  type ServiceResult,
} from '@kubetrust/proto';
import { peerUris } from '@kubetrust/shared/dist/identity';
import type { Logger } from '@kubetrust/shared/dist/log';
import type { AgentConfig } from './config';
import { InvalidChangeError, Installer } from './install';
import { restartService } from './services';
import { StagedKeys } from './staged-keys';
import { readFileState } from './state';
import { AGENT_VERSION } from './version';

type AnyCall = grpc.ServerUnaryCall<unknown, unknown>;

/**
 * Checks the caller's identity; returns the gRPC error to send, or undefined when the caller is the
 * controller. TLS has already rejected any client certificate that the management CA did not sign,
 * that is outside its validity period or that does not allow clientAuth, so the handshake of such a
 * client fails before any handler runs. grpc-js exposes the peer certificate only on such verified
 * connections; what remains to check here is which identity the certificate names.
 */
function authorize(call: AnyCall, config: AgentConfig): Partial<grpc.StatusObject> | undefined {
  const certificate = call.getAuthContext().sslPeerCertificate;
  if (certificate?.raw === undefined) {
    return agentError(ErrorReason.Unauthenticated, 'a client certificate issued by the management CA is required');
  }
  if (!peerUris(certificate).includes(config.controllerIdentity)) {
    return agentError(ErrorReason.NotController, `client is not ${config.controllerIdentity}; only the controller may call this agent`);
  }
  return undefined;
}

/** Wraps a handler with the identity check, error mapping and one serialised change at a time. */
function unary<Req, Res>(
  config: AgentConfig,
  logger: Logger,
  method: string,
  handle: (request: Req) => Promise<Res>,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const denied = authorize(call as AnyCall, config);
    if (denied !== undefined) {
      logger.warn('rejected call', { method, peer: call.getPeer(), reason: denied.details });
      callback(denied);
      return;
    }
    handle(call.request).then(
      (response) => callback(null, response),
      (error: Error) => {
        const reason = error instanceof InvalidChangeError ? ErrorReason.InvalidRequest : ErrorReason.InstallFailed;
        logger.error('call failed', { method, error: error.message });
        callback(agentError(reason, error.message));
      },
    );
  };
}

/** Serialises the calls that change the node, so two changes never interleave. */
class Mutex {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.tail.then(task, task);
    this.tail = result.catch(() => undefined);
    return result;
  }
}

export interface RunningAgent {
  readonly server: grpc.Server;
  readonly port: number;
  stop(): Promise<void>;
}

export async function startAgent(config: AgentConfig, logger: Logger): Promise<RunningAgent> {
  // Fail closed at start-up: a missing or mismatched identity stops the agent with a named error.
  const ownCertificate = new crypto.X509Certificate(fs.readFileSync(config.tls.certFile));
  if (!ownCertificate.checkPrivateKey(crypto.createPrivateKey(fs.readFileSync(config.tls.keyFile)))) {
    throw new Error(`tls.keyFile ${config.tls.keyFile} does not match tls.certFile ${config.tls.certFile}`);
  }
  const keys = new StagedKeys(config.stateDir);
  const installer = new Installer(config.installRoot, config.stateDir, keys, logger);
  await installer.recoverInterruptedChange();
  const mutex = new Mutex();

  const handlers: AgentHandlers = {
    GetState: unary(config, logger, 'GetState', async (request: import('@kubetrust/proto').GetStateRequest__Output) => ({
      node_name: config.nodeName,
      agent_version: AGENT_VERSION,
      clock_unix_ms: String(Date.now()),
      files: await Promise.all(request.files.map((query) => readFileState(config.installRoot, query))),
    })),
    PrepareKeys: unary(config, logger, 'PrepareKeys', (request: import('@kubetrust/proto').PrepareKeysRequest__Output) =>
      mutex.run(async () => {
        const keysOut = await Promise.all(
          request.keys.map(async (key) => ({ key_id: key.key_id, csr_pem: Buffer.from(await keys.prepare(key)) })),
        );
        logger.info('generated keys', { count: keysOut.length });
        return { keys: keysOut };
      }),
    ),
    Apply: unary(config, logger, 'Apply', (request: import('@kubetrust/proto').ApplyRequest__Output) =>
      mutex.run(async () => {
        const installed = await installer.install(request.change_id, request.files);
        const services: ServiceResult[] = [];
        if (installed.changedPaths.length > 0) {
          for (const name of request.restart_services) services.push(await restartService(name, config.services[name], logger));
        }
        return { changed_paths: installed.changedPaths, services, backup_dir: installed.backupDir };
      }),
    ),
  };

  const proto = loadAgentProto();
  const server = new grpc.Server();
  server.addService(proto.kubetrust.agent.v1.Agent.service, handlers);
  // requestCert with rejectUnauthorized: a client without a valid management-plane certificate
  // fails the TLS handshake.
  const credentials = grpc.ServerCredentials.createSsl(
    fs.readFileSync(config.tls.caFile),
    [{ cert_chain: fs.readFileSync(config.tls.certFile), private_key: fs.readFileSync(config.tls.keyFile) }],
    true,
  );
  const host = config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host;
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${host}:${config.listen.port}`, credentials, (error, bound) => (error ? reject(error) : resolve(bound)));
  });
  logger.info('agent listening', { node: config.nodeName, address: `${host}:${port}`, installRoot: config.installRoot });
  return {
    server,
    port,
    stop: () =>
      new Promise<void>((resolve) => {
        server.tryShutdown(() => resolve());
      }),
  };
}
