/**
 * The certificate catalogue: every CA, key pair, leaf certificate and kubeconfig kubetrust issues,
 * with who receives it, where it goes and which services read it. Issuing, planning, distributing
 * and expiry checks all read this table; no certificate fact is written anywhere else.
 *
 * Subjects, usages and SAN sets follow kubeadm's certificate list (cmd/kubeadm/app/phases/certs/
 * certlist.go and util/pkiutil, Kubernetes v1.29–v1.31) and the Kubernetes "PKI certificates and
 * requirements" page.
 */
import { isIP } from 'node:net';
import { firstAddressOfCidr } from '../inventory/net';
import type { PkiSpec, Role } from '../inventory/types';
import type { ExtKeyUsage } from '../pki/certificate';
import type {
  CaEntry,
  CaName,
  CatalogueEntry,
  FileSpec,
  KeyPairEntry,
  KubeconfigEntry,
  LeafEntry,
  NodeContext,
  SanSet,
  Service,
} from './types';

const PKI = '/etc/kubernetes/pki';
const CERT_MODE = 0o644;
const PRIVATE_MODE = 0o600;
const ROOT = { uid: 0, gid: 0 } as const;

/** Port of each master's own kube-apiserver, used in the kubeconfigs of its local components. */
export const APISERVER_SECURE_PORT = 6443;

function file(path: string, mode: number, roles: readonly Role[], consumers: readonly Service[]): FileSpec {
  return { path: { kubeadm: path }, mode, owner: ROOT, roles, consumers };
}

/** Removes duplicates, keeping the first occurrence. */
function unique(values: readonly string[]): string[] {
  return [...new Set(values)];
}

/** Splits extra SANs into DNS names and IP addresses. */
function splitNames(names: readonly string[]): SanSet {
  return {
    dnsNames: names.filter((name) => isIP(name) === 0),
    ipAddresses: names.filter((name) => isIP(name) !== 0),
  };
}

/**
 * kube-apiserver serving SANs: node name and hostnames, the in-cluster service names, the first IP
 * of every service CIDR, the master's addresses, the endpoint host clients dial and the extra SANs.
 * DNS names are sorted and everything is deduplicated, as kubeadm does.
 */
export function apiServerSans({ inventory, node }: NodeContext): SanSet {
  const domain = inventory.clusterDomain;
  const extra = splitNames([inventory.apiServer.host, ...inventory.apiServer.extraSANs]);
  const dnsNames = unique([
    node.name,
    ...node.hostnames,
    'kubernetes',
    'kubernetes.default',
    'kubernetes.default.svc',
    `kubernetes.default.svc.${domain}`,
    ...extra.dnsNames,
  ]).sort();
  const ipAddresses = unique([
    ...inventory.serviceCIDRs.map(firstAddressOfCidr),
    ...node.addresses,
    ...extra.ipAddresses,
  ]);
  return { dnsNames, ipAddresses };
}

/**
 * etcd server and peer SANs: the member's names, `localhost` and every address it listens on.
 * etcd checks a peer's source IP against the IP SANs of its peer certificate, so each member
 * address must be listed.
 */
export function etcdMemberSans({ node }: NodeContext): SanSet {
  return {
    dnsNames: unique([node.name, ...node.hostnames, 'localhost']),
    ipAddresses: unique([...node.addresses, '127.0.0.1', '::1']),
  };
}

/** kubelet serving SANs: the apiserver dials a kubelet by node name or address, so both must be present. */
export function kubeletServingSans({ node }: NodeContext): SanSet {
  return { dnsNames: unique([node.name, ...node.hostnames]), ipAddresses: [...node.addresses] };
}

const NO_SANS = (): SanSet => ({ dnsNames: [], ipAddresses: [] });

/** A TLS-bootstrapped kubelet requests its own certificates, so kubetrust issues none for it. */
function preProvisionedKubelet({ node }: NodeContext): boolean {
  return node.kubelet.credentials === 'pre-provisioned';
}

function fixedSubject(commonName: string, organizations: readonly string[] = []) {
  return () => ({ commonName, organizations });
}

function ownApiServer({ node }: NodeContext): string {
  const address = node.addresses[0] ?? node.name;
  const host = isIP(address) === 6 ? `[${address}]` : address;
  return `https://${host}:${APISERVER_SECURE_PORT}`;
}

function clusterEndpoint({ inventory }: NodeContext): string {
  return inventory.apiServer.endpoint;
}

const SERVER_AND_CLIENT: readonly ExtKeyUsage[] = ['serverAuth', 'clientAuth'];

const CAS: readonly CaEntry[] = [
  {
    kind: 'ca',
    name: 'cluster-ca',
    description: 'Cluster CA: trusted for client certificates by the apiserver and kubelets',
    commonName: 'kubernetes',
    certificate: file(`${PKI}/ca.crt`, CERT_MODE, ['master', 'worker'], [
      'kube-apiserver',
      'kube-controller-manager',
      'kubelet',
    ]),
    // The controller-manager's CSR signer needs the key; no other role ever receives it.
    privateKey: file(`${PKI}/ca.key`, PRIVATE_MODE, ['master'], ['kube-controller-manager']),
  },
  {
    kind: 'ca',
    name: 'etcd-ca',
    description: 'etcd CA: trusted by etcd for peers and clients',
    commonName: 'etcd-ca',
    sharedWith: { when: (pki) => pki.etcdCA === 'shared', ca: 'cluster-ca' },
    certificate: file(`${PKI}/etcd/ca.crt`, CERT_MODE, ['etcd', 'master'], ['etcd', 'kube-apiserver']),
  },
  {
    kind: 'ca',
    name: 'front-proxy-ca',
    description: 'Front-proxy CA: trusted by the apiserver for the aggregation layer',
    commonName: 'front-proxy-ca',
    certificate: file(`${PKI}/front-proxy-ca.crt`, CERT_MODE, ['master'], [
      'kube-apiserver',
      'kube-controller-manager',
    ]),
  },
];

const SERVICE_ACCOUNT: KeyPairEntry = {
  kind: 'keypair',
  name: 'service-account',
  description: 'Service-account token signing key pair, the same on every master',
  privateKey: file(`${PKI}/sa.key`, PRIVATE_MODE, ['master'], ['kube-apiserver', 'kube-controller-manager']),
  publicKey: file(`${PKI}/sa.pub`, CERT_MODE, ['master'], ['kube-apiserver']),
};

function leaf(
  name: string,
  description: string,
  parent: CaName,
  subject: LeafEntry['subject'],
  extKeyUsage: readonly ExtKeyUsage[],
  sans: LeafEntry['sans'],
  files: { certificate: string; privateKey: string; roles: readonly Role[]; consumers: readonly Service[] },
  extra: Partial<Pick<LeafEntry, 'requiredBindings' | 'when'>> = {},
): LeafEntry {
  return {
    kind: 'leaf',
    name,
    description,
    parent,
    subject,
    extKeyUsage,
    sans,
    certificate: file(files.certificate, CERT_MODE, files.roles, files.consumers),
    privateKey: file(files.privateKey, PRIVATE_MODE, files.roles, files.consumers),
    ...extra,
  };
}

const LEAVES: readonly LeafEntry[] = [
  leaf('apiserver', 'kube-apiserver serving certificate', 'cluster-ca', fixedSubject('kube-apiserver'), ['serverAuth'], apiServerSans, {
    certificate: `${PKI}/apiserver.crt`,
    privateKey: `${PKI}/apiserver.key`,
    roles: ['master'],
    consumers: ['kube-apiserver'],
  }),
  leaf(
    'apiserver-kubelet-client',
    'kube-apiserver client certificate for kubelet APIs (logs, exec, metrics)',
    'cluster-ca',
    fixedSubject('kube-apiserver-kubelet-client'),
    ['clientAuth'],
    NO_SANS,
    {
      certificate: `${PKI}/apiserver-kubelet-client.crt`,
      privateKey: `${PKI}/apiserver-kubelet-client.key`,
      roles: ['master'],
      consumers: ['kube-apiserver'],
    },
    // No group in the certificate: kubelets authorise this user through the binding instead of system:masters.
    { requiredBindings: () => [{ clusterRole: 'system:kubelet-api-admin', subjectKind: 'User', subjectName: 'kube-apiserver-kubelet-client' }] },
  ),
  leaf(
    'front-proxy-client',
    'kube-apiserver client certificate for aggregated API servers; its CN must be in --requestheader-allowed-names',
    'front-proxy-ca',
    fixedSubject('front-proxy-client'),
    ['clientAuth'],
    NO_SANS,
    {
      certificate: `${PKI}/front-proxy-client.crt`,
      privateKey: `${PKI}/front-proxy-client.key`,
      roles: ['master'],
      consumers: ['kube-apiserver'],
    },
  ),
  leaf(
    'apiserver-etcd-client',
    'kube-apiserver client certificate for etcd',
    'etcd-ca',
    fixedSubject('kube-apiserver-etcd-client'),
    ['clientAuth'],
    NO_SANS,
    {
      certificate: `${PKI}/apiserver-etcd-client.crt`,
      privateKey: `${PKI}/apiserver-etcd-client.key`,
      roles: ['master'],
      consumers: ['kube-apiserver'],
    },
  ),
  // etcd's embedded gRPC gateway dials its own client port with the serving certificate, so the
  // server certificate needs clientAuth as well; peers listen and dial with the peer certificate.
  leaf('etcd-server', 'etcd serving certificate', 'etcd-ca', ({ node }) => ({ commonName: node.name, organizations: [] }), SERVER_AND_CLIENT, etcdMemberSans, {
    certificate: `${PKI}/etcd/server.crt`,
    privateKey: `${PKI}/etcd/server.key`,
    roles: ['etcd'],
    consumers: ['etcd'],
  }),
  leaf('etcd-peer', 'etcd peer certificate', 'etcd-ca', ({ node }) => ({ commonName: node.name, organizations: [] }), SERVER_AND_CLIENT, etcdMemberSans, {
    certificate: `${PKI}/etcd/peer.crt`,
    privateKey: `${PKI}/etcd/peer.key`,
    roles: ['etcd'],
    consumers: ['etcd'],
  }),
  leaf(
    'etcd-healthcheck-client',
    'Client certificate for etcd health checks',
    'etcd-ca',
    fixedSubject('kube-etcd-healthcheck-client'),
    ['clientAuth'],
    NO_SANS,
    {
      certificate: `${PKI}/etcd/healthcheck-client.crt`,
      privateKey: `${PKI}/etcd/healthcheck-client.key`,
      roles: ['etcd'],
      consumers: [],
    },
  ),
  leaf(
    'kubelet-server',
    'kubelet serving certificate, verified by the apiserver with --kubelet-certificate-authority',
    'cluster-ca',
    ({ node }) => ({ commonName: `system:node:${node.name}`, organizations: ['system:nodes'] }),
    ['serverAuth'],
    kubeletServingSans,
    {
      certificate: '/var/lib/kubelet/pki/kubelet.crt',
      privateKey: '/var/lib/kubelet/pki/kubelet.key',
      roles: ['worker'],
      consumers: ['kubelet'],
    },
    { when: preProvisionedKubelet },
  ),
];

function kubeconfig(
  name: string,
  description: string,
  subject: KubeconfigEntry['subject'],
  server: KubeconfigEntry['server'],
  path: string,
  roles: readonly Role[],
  consumers: readonly Service[],
  extra: Partial<Pick<KubeconfigEntry, 'requiredBindings' | 'when'>> = {},
): KubeconfigEntry {
  return { kind: 'kubeconfig', name, description, parent: 'cluster-ca', subject, server, file: file(path, PRIVATE_MODE, roles, consumers), ...extra };
}

const KUBECONFIGS: readonly KubeconfigEntry[] = [
  kubeconfig(
    'admin.conf',
    'Administrator kubeconfig; its group is spec.admin.group',
    ({ inventory }) => ({ commonName: 'kubernetes-admin', organizations: [inventory.admin.group] }),
    clusterEndpoint,
    '/etc/kubernetes/admin.conf',
    ['master'],
    [],
    // system:masters bypasses authorisation; any other group needs cluster-admin bound to it.
    { requiredBindings: (inventory) => (inventory.admin.group === 'system:masters' ? [] : [{ clusterRole: 'cluster-admin', subjectKind: 'Group', subjectName: inventory.admin.group }]) },
  ),
  kubeconfig(
    'controller-manager.conf',
    'kube-controller-manager kubeconfig, pointing at the master\'s own apiserver',
    fixedSubject('system:kube-controller-manager'),
    ownApiServer,
    '/etc/kubernetes/controller-manager.conf',
    ['master'],
    ['kube-controller-manager'],
  ),
  kubeconfig(
    'scheduler.conf',
    'kube-scheduler kubeconfig, pointing at the master\'s own apiserver',
    fixedSubject('system:kube-scheduler'),
    ownApiServer,
    '/etc/kubernetes/scheduler.conf',
    ['master'],
    ['kube-scheduler'],
  ),
  kubeconfig(
    'kubelet.conf',
    'kubelet kubeconfig with the node\'s own client certificate',
    ({ node }) => ({ commonName: `system:node:${node.name}`, organizations: ['system:nodes'] }),
    clusterEndpoint,
    '/etc/kubernetes/kubelet.conf',
    ['worker'],
    ['kubelet'],
    { when: preProvisionedKubelet },
  ),
  kubeconfig('kube-proxy.conf', 'kube-proxy kubeconfig', fixedSubject('system:kube-proxy'), clusterEndpoint, '/etc/kubernetes/kube-proxy.conf', ['worker'], ['kube-proxy']),
];

/** Every entry, CAs first so that a walk in order always meets a parent before its children. */
export const CATALOGUE: readonly CatalogueEntry[] = [...CAS, SERVICE_ACCOUNT, ...LEAVES, ...KUBECONFIGS];

/** Services each role runs, in the order kubetrust restarts them. */
export const SERVICES_BY_ROLE: Readonly<Record<Role, readonly Service[]>> = {
  etcd: ['etcd'],
  master: ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler'],
  worker: ['kubelet', 'kube-proxy'],
};

export function caEntry(name: CaName): CaEntry {
  const entry = CAS.find((candidate) => candidate.name === name);
  if (entry === undefined) throw new Error(`catalogue has no CA named "${name}"`);
  return entry;
}

/** The CA that actually signs for `name`: etcd-ca is the cluster CA when etcd shares it. */
export function signingCa(name: CaName, pki: Pick<PkiSpec, 'layout' | 'etcdCA'>): CaName {
  const entry = caEntry(name);
  return entry.sharedWith?.when(pki) === true ? entry.sharedWith.ca : name;
}

/** CAs that have their own key pair with these PKI settings. */
export function casForPki(pki: Pick<PkiSpec, 'layout' | 'etcdCA'>): CaName[] {
  return CAS.filter((entry) => signingCa(entry.name, pki) === entry.name).map((entry) => entry.name);
}
