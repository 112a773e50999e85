/**
 * The health checks that gate a restart of etcd and kube-apiserver when the node's agent.yaml sets
 * no check of its own. The controller sends them with each change. The agent runs them after the
 * restart, and a check that does not pass in time rolls the node back.
 */
import { isIP } from 'node:net';
import type { NodeSpec } from '../inventory/types';
import { APISERVER_SECURE_PORT } from './catalogue';
import type { NodeItem, StaticItem } from './select';
import type { Service } from './types';

/** The client port etcd serves on, which kubeadm and kubeasz clusters both use. */
export const ETCD_CLIENT_PORT = 2379;

/** An HTTPS GET that must return a 2xx status, with node paths of its files. */
export interface DefaultHealthCheck {
  readonly service: Service;
  readonly url: string;
  /** CA certificates that verify the service's serving certificate. */
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
}

function urlHost(node: NodeSpec): string {
  const address = node.addresses[0] ?? node.name;
  return isIP(address) === 6 ? `[${address}]` : address;
}

/** Finds the node's copy of the certificate of CA `ca` that `service` reads. */
function trustFile(items: readonly NodeItem[], ca: string, service: Service): StaticItem | undefined {
  return items.find(
    (item): item is StaticItem =>
      item.type === 'static' && 'ca' in item.source && item.source.ca === ca && item.source.part === 'certificate' && item.file.consumers.includes(service),
  );
}

/**
 * Returns the default checks for the services of `node`, from its catalogue `items`:
 * - etcd: `https://<first address>:2379/health` with the health-check client certificate. etcd
 *   returns 200 only while the member has a leader, so the check also proves quorum.
 * - kube-apiserver: `https://<first address>:6443/readyz` with the apiserver's kubelet client
 *   certificate, so that it passes whether or not the apiserver allows anonymous requests.
 * A service whose files are not all in `items` gets no check.
 */
export function defaultHealthChecks(node: NodeSpec, items: readonly NodeItem[]): DefaultHealthCheck[] {
  const checks: DefaultHealthCheck[] = [];
  const leaf = (name: string) => items.find((item) => item.type === 'leaf' && item.name === name);
  const host = urlHost(node);
  const etcdServer = leaf('etcd-server');
  const etcdClient = leaf('etcd-healthcheck-client');
  if (etcdServer?.type === 'leaf' && etcdClient?.type === 'leaf') {
    const trust = trustFile(items, etcdServer.parent, 'etcd');
    if (trust !== undefined) {
      checks.push({ service: 'etcd', url: `https://${host}:${ETCD_CLIENT_PORT}/health`, caFile: trust.file.path, certFile: etcdClient.certificate.path, keyFile: etcdClient.privateKey.path });
    }
  }
  const apiserver = leaf('apiserver');
  const apiserverClient = leaf('apiserver-kubelet-client');
  if (apiserver?.type === 'leaf' && apiserverClient?.type === 'leaf') {
    const trust = trustFile(items, apiserver.parent, 'kube-apiserver');
    if (trust !== undefined) {
      checks.push({ service: 'kube-apiserver', url: `https://${host}:${APISERVER_SECURE_PORT}/readyz`, caFile: trust.file.path, certFile: apiserverClient.certificate.path, keyFile: apiserverClient.privateKey.path });
    }
  }
  return checks;
}
