/**
 * The agent's gRPC server. It listens with mutual TLS on the management plane and serves a call
 * only when the client certificate carries the controller identity this agent was enrolled with.
 *
 * Reads: the agent configuration and the files below its install root.
 * Writes: files below the install root, staged keys and backups in its state directory.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import {
  ErrorReason,
  agentError,
  loadAgentProto,
  type AgentHandlers,
  type ServiceResult,
} from '@kubetrust/proto';
import { LockedError, acquirePidLock } from '@kubetrust/shared/dist/files';
import { peerUris } from '@kubetrust/shared/dist/identity';
import type { Logger } from '@kubetrust/shared/dist/logger';
import type { AgentConfig, HealthCheck } from './config';
import { BusyError, HealthCheckFailedError, InvalidRequestError, isFileSystemError } from './errors';
import { Installer } from './install';
import { KubeletRegistration } from './kubelet-registration';
import { PendingRestarts, orderServices } from './pending-restarts';
import { defaultHealthChecks, restartService } from './services';
import { StagedKeys } from './staged-keys';
import { readNodeFile } from './state';
import { AGENT_VERSION } from './version';

type AnyCall = grpc.ServerUnaryCall<unknown, unknown>;

const CLIENT_AUTH_OID = '1.3.6.1.5.5.7.3.2';

/**
 * Returns why a verified peer certificate does not authenticate a management-plane client, or
 * undefined when it does. TLS has checked the chain already; this repeats the check so that the
 * agent stays closed even if the transport reported an unverified certificate.
 */
function certificateProblem(raw: Buffer, managementCa: crypto.X509Certificate, now: number): string | undefined {
  const certificate = new crypto.X509Certificate(raw);
  if (!certificate.checkIssued(managementCa) || !certificate.verify(managementCa.publicKey)) {
    return "the client certificate is not signed by this agent's management CA";
  }
  if (now < Date.parse(certificate.validFrom) || now > Date.parse(certificate.validTo)) {
    return `the client certificate is outside its validity period (${certificate.validFrom} to ${certificate.validTo})`;
  }
  const usages = certificate.keyUsage;
  if (usages !== undefined && !usages.includes(CLIENT_AUTH_OID)) return 'the client certificate does not allow clientAuth';
  return undefined;
}

/**
 * Checks the caller's identity; returns the gRPC error to send, or undefined when the caller is the
 * controller. TLS requests a client certificate but lets the handshake finish without one, so that a
 * rejected client receives UNAUTHENTICATED or PERMISSION_DENIED instead of a broken connection.
 * grpc-js reports a peer certificate only when TLS verified it against the management CA.
 */
function authorize(call: AnyCall, config: AgentConfig, managementCa: crypto.X509Certificate): Partial<grpc.StatusObject> | undefined {
  const certificate = call.getAuthContext().sslPeerCertificate;
  if (certificate?.raw === undefined) {
    return agentError(ErrorReason.Unauthenticated, "no verified client certificate: present a certificate issued by this agent's management CA");
  }
  const problem = certificateProblem(certificate.raw, managementCa, Date.now());
  if (problem !== undefined) return agentError(ErrorReason.Unauthenticated, problem);
  if (!peerUris(certificate).includes(config.controllerIdentity)) {
    return agentError(ErrorReason.PermissionDenied, `client is not ${config.controllerIdentity}; only the controller may call this agent`);
  }
  return undefined;
}

/**
 * Hands fixed PEM material to grpc-js. Delivery waits for a microtask because grpc-js registers its
 * own watcher only after adding these listeners, and would miss an update sent synchronously.
 */
class StaticCertificateProvider implements grpc.experimental.CertificateProvider {
  constructor(
    private readonly caCertificate: Buffer,
    private readonly certificate: Buffer,
    private readonly privateKey: Buffer,
  ) {}

  addCaCertificateListener(listener: grpc.experimental.CaCertificateUpdateListener): void {
    queueMicrotask(() => listener({ caCertificate: this.caCertificate }));
  }

  removeCaCertificateListener(): void {}

  addIdentityCertificateListener(listener: grpc.experimental.IdentityCertificateUpdateListener): void {
    queueMicrotask(() => listener({ certificate: this.certificate, privateKey: this.privateKey }));
  }

  removeIdentityCertificateListener(): void {}
}

/** The typed reason for an error a handler threw. */
function reasonFor(error: Error): ErrorReason {
  if (error instanceof InvalidRequestError) return ErrorReason.InvalidRequest;
  if (error instanceof BusyError) return ErrorReason.Busy;
  if (error instanceof HealthCheckFailedError) return ErrorReason.HealthCheckFailed;
  if (isFileSystemError(error)) return ErrorReason.FileSystem;
  return ErrorReason.Internal;
}

/**
 * Wraps a handler with the identity check and the mapping of errors to typed reasons. A
 * HealthCheckFailedError sends its response along, serialised with `serializeResponse`.
 */
function unary<Req, Res>(
  config: AgentConfig,
  managementCa: crypto.X509Certificate,
  logger: Logger,
  method: string,
  handle: (request: Req) => Promise<Res>,
  serializeResponse?: (response: Res) => Buffer,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const denied = authorize(call as AnyCall, config, managementCa);
    if (denied !== undefined) {
      logger.warn('rejected call', { method, peer: call.getPeer(), reason: denied.details });
      callback(denied);
      return;
    }
    handle(call.request).then(
      (response) => callback(null, response),
      (error: Error) => {
        const reason = reasonFor(error);
        const response = error instanceof HealthCheckFailedError && serializeResponse !== undefined ? serializeResponse(error.response as Res) : undefined;
        if (reason === ErrorReason.HealthCheckFailed || reason === ErrorReason.Busy) logger.warn('call failed', { method, reason, error: error.message });
        else logger.error('call failed', { method, reason, error: error.message });
        callback(agentError(reason, error.message, response));
      },
    );
  };
}

/** Runs the calls that change the node one at a time; a call that arrives during another is refused as busy. */
class ChangeGate {
  private running = false;
  async run<T>(method: string, task: () => Promise<T>): Promise<T> {
    if (this.running) throw new BusyError(method);
    this.running = true;
    try {
      return await task();
    } finally {
      this.running = false;
    }
  }
}

/** Fails a change whose services are not all healthy, keeping the response for the caller. */
function requireHealthy<Res extends { services: readonly ServiceResult[] }>(outcome: string, response: Res): Res {
  const unhealthy = response.services.filter((service) => !service.healthy);
  if (unhealthy.length === 0) return response;
  const names = unhealthy.map((service) => `${String(service.name)} (${String(service.check)}: ${String(service.output)})`).join('; ');
  throw new HealthCheckFailedError(`${outcome}, but ${unhealthy.length === 1 ? 'a service is' : 'services are'} unhealthy: ${names}`, response);
}

export interface RunningAgent {
  readonly server: grpc.Server;
  readonly port: number;
  stop(): Promise<void>;
}

export async function startAgent(config: AgentConfig, logger: Logger): Promise<RunningAgent> {
  // Fail closed at start-up: a missing or mismatched identity stops the agent with a named error.
  const [caPem, certificatePem, keyPem] = [config.tls.caFile, config.tls.certFile, config.tls.keyFile].map((file) => fs.readFileSync(file)) as [Buffer, Buffer, Buffer];
  const managementCa = new crypto.X509Certificate(caPem);
  const ownCertificate = new crypto.X509Certificate(certificatePem);
  if (!ownCertificate.checkPrivateKey(crypto.createPrivateKey(keyPem))) {
    throw new Error(`tls.keyFile ${config.tls.keyFile} does not match tls.certFile ${config.tls.certFile}; enroll the node again`);
  }
  if (!ownCertificate.checkIssued(managementCa) || !ownCertificate.verify(managementCa.publicKey)) {
    throw new Error(`tls.certFile ${config.tls.certFile} is not issued by tls.caFile ${config.tls.caFile}; enroll the node again`);
  }
  // One agent per state directory: a second instance started by mistake must not touch the
  // journal or the staged keys of the running one.
  let releaseLock: () => Promise<void>;
  try {
    releaseLock = await acquirePidLock(path.join(config.stateDir, 'agent.lock'));
  } catch (error) {
    if (error instanceof LockedError) {
      throw new Error(`another agent (process ${error.holder}) already uses state directory ${config.stateDir}; stop it first or give this agent its own stateDir`);
    }
    throw error;
  }
  const keys = new StagedKeys(config.stateDir);
  const pending = new PendingRestarts(config.stateDir);
  const installer = new Installer(config.installRoot, config.stateDir, keys, logger, config.backupsKept);

  /**
   * Restarts every pending service in order, each gated by its check in agent.yaml or else by its
   * default check from the request. A service leaves the pending list only once it is healthy.
   */
  const restartPending = async (defaults: ReadonlyMap<string, HealthCheck>): Promise<ServiceResult[]> => {
    const services: ServiceResult[] = [];
    for (const name of orderServices(await pending.list())) {
      const result = await restartService(name, config.services[name], logger, defaults.get(name));
      if (result.healthy) await pending.remove(name);
      services.push(result);
    }
    return services;
  };
  await installer.recoverInterruptedChange();
  const registration = new KubeletRegistration(config.installRoot, config.stateDir, config.nodeName, logger);
  await registration.resume();
  const gate = new ChangeGate();
  const agentService = loadAgentProto().kubetrust.agent.v1.Agent.service;

  const handlers: AgentHandlers = {
    GetState: unary(config, managementCa, logger, 'GetState', async (request: import('@kubetrust/proto').GetStateRequest__Output) => ({
      node_name: config.nodeName,
      agent_version: AGENT_VERSION,
      clock_unix_ms: String(Date.now()),
      files: await Promise.all(request.files.map((query) => readNodeFile(config.installRoot, query))),
      pending_restarts: await pending.list(),
      kubelet_bootstrap: registration.state(),
      installed_paths: [...(await installer.installedPaths())].sort(),
    })),
    PrepareKeys: unary(config, managementCa, logger, 'PrepareKeys', (request: import('@kubetrust/proto').PrepareKeysRequest__Output) =>
      gate.run('PrepareKeys', async () => {
        const purged = await keys.purgeAbandoned();
        if (purged > 0) logger.info('deleted abandoned staged keys', { count: purged });
        const keysOut = await Promise.all(
          request.keys.map(async (key) => ({ key_id: key.key_id, csr_pem: Buffer.from(await keys.prepare(key)) })),
        );
        logger.info('generated keys', { count: keysOut.length });
        return { keys: keysOut };
      }),
    ),
    Apply: unary(
      config,
      managementCa,
      logger,
      'Apply',
      (request: import('@kubetrust/proto').ApplyRequest__Output) =>
        gate.run('Apply', async () => {
          const watch = request.kubelet_bootstrap ? registration.validate(request.kubelet_bootstrap) : undefined;
          const defaults = defaultHealthChecks(config.installRoot, request.default_health_checks);
          const installed = await installer.install(request.change_id, request.files, () => pending.add(request.restart_services), request.restart_services, request.remove_paths);
          // Armed before the restarts: the kubelet may register as soon as it starts.
          if (watch !== undefined) await registration.arm(watch);
          const response = { changed_paths: installed.changedPaths, removed_paths: installed.removedPaths, services: await restartPending(defaults), backup_dir: installed.backupDir };
          return requireHealthy(`change ${request.change_id} is installed`, response);
        }),
      (response) => agentService.Apply.responseSerialize(response),
    ),
    Rollback: unary(
      config,
      managementCa,
      logger,
      'Rollback',
      (request: import('@kubetrust/proto').RollbackRequest__Output) =>
        gate.run('Rollback', async () => {
          const defaults = defaultHealthChecks(config.installRoot, request.default_health_checks);
          const rolledBack = await installer.rollback(request.change_id, request.allow_removing_all);
          await pending.add(rolledBack.restartServices);
          const response = {
            changed_paths: rolledBack.restoredPaths,
            removed_paths: rolledBack.removedPaths,
            change_id: rolledBack.changeId,
            services: await restartPending(defaults),
            backup_dir: '',
          };
          return requireHealthy(`change ${rolledBack.changeId} is rolled back`, response);
        }),
      (response) => agentService.Rollback.responseSerialize(response),
    ),
  };

  // grpc-js prints its own diagnostics to the console; route them into the agent's log instead.
  grpc.setLogger({ error: (...args: unknown[]) => logger.debug('grpc', { detail: args.map(String).join(' ') }) } as unknown as Partial<Console>);
  const proto = loadAgentProto();
  const server = new grpc.Server();
  server.addService(proto.kubetrust.agent.v1.Agent.service, handlers);
  // One provider serves both the CA and the agent's identity, so the order of the two provider
  // arguments does not matter.
  const provider = new StaticCertificateProvider(caPem, certificatePem, keyPem);
  const credentials = grpc.experimental.createCertificateProviderServerCredentials(provider, provider, false);
  const host = config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host;
  let port: number;
  try {
    port = await new Promise<number>((resolve, reject) => {
      server.bindAsync(`${host}:${config.listen.port}`, credentials, (error, bound) => (error ? reject(error) : resolve(bound)));
    });
  } catch (error) {
    await releaseLock();
    throw new Error(`cannot listen on ${host}:${config.listen.port} (${(error as Error).message}); check that no other process uses the port and that the address belongs to this node`);
  }
  logger.info('agent listening', { node: config.nodeName, address: `${host}:${port}`, installRoot: config.installRoot });
  return {
    server,
    port,
    stop: async () => {
      registration.stop();
      await new Promise<void>((resolve) => {
        server.tryShutdown(() => resolve());
      });
      await releaseLock();
    },
  };
}
