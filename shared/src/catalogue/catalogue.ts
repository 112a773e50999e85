/**
 * The certificate catalogue: every CA, key pair, leaf certificate and kubeconfig kubetrust issues,
 * with who receives it, where it goes in each path layout, and which flag or configuration field of
 * which service reads it. Issuing, planning, distributing, expiry checks and the flags report all
 * read this table; no certificate fact is written anywhere else.
 *
 * Subjects, usages and SAN sets follow kubeadm's certificate list (cmd/kubeadm/app/phases/certs/
 * certlist.go and util/pkiutil, Kubernetes v1.29–v1.31) and the Kubernetes "PKI certificates and
 * requirements" page. Flag names are those of the kube-apiserver, kube-controller-manager,
 * kube-scheduler, kubelet and etcd command-line references; configuration fields are those of
 * KubeletConfiguration (kubelet.config.k8s.io/v1beta1) and KubeProxyConfiguration
 * (kubeproxy.config.k8s.io/v1alpha1).
 */
import { isIP } from 'node:net';
import { firstAddressOfCidr } from '../inventory/net';
import type { Inventory, PathLayout, PkiSpec, Role } from '../inventory/types';
import type { ExtKeyUsage } from '../pki/certificate';
import type {
  CaEntry,
  CaName,
  CatalogueEntry,
  CompanionFlag,
  FileSetting,
  FileSpec,
  KeyPairEntry,
  KubeconfigEntry,
  LeafEntry,
  NodeContext,
  RequiredBinding,
  SanSet,
  Service,
} from './types';
import { SERVICES } from './types';

/** Directory of the kubeadm path layout. */
const PKI = '/etc/kubernetes/pki';
/** Directory of the cfssl path layout: `<name>.pem` for a certificate, `<name>-key.pem` for its key. */
const SSL = '/etc/kubernetes/ssl';
const CERT_MODE = 0o644;
const PRIVATE_MODE = 0o600;
const ROOT = { uid: 0, gid: 0 } as const;

/** Port of each master's own kube-apiserver, used in the kubeconfigs of its local components. */
export const APISERVER_SECURE_PORT = 6443;

/** Common name of the front-proxy client certificate, which kube-apiserver must allow by name. */
const FRONT_PROXY_CLIENT_CN = 'front-proxy-client';

type LayoutPaths = Readonly<Record<PathLayout, string>>;

interface FileOptions {
  readonly path: LayoutPaths;
  readonly mode: number;
  readonly roles: readonly Role[];
  readonly settings?: readonly FileSetting[];
  readonly companions?: readonly CompanionFlag[];
}

/** Builds a file whose consumers are exactly the services that have a setting for it. */
function file({ path, mode, roles, settings = [], companions = [] }: FileOptions): FileSpec {
  const consumers = SERVICES.filter((service) => settings.some((setting) => setting.service === service));
  return { path, mode, owner: ROOT, roles, settings, companions, consumers };
}

/** Paths of a certificate and its key: `<kubeadm>.crt` and `.key`, `<cfssl>.pem` and `-key.pem`. */
function pemPair(kubeadm: string, cfssl: string): { certificate: LayoutPaths; privateKey: LayoutPaths } {
  return {
    certificate: { kubeadm: `${kubeadm}.crt`, cfssl: `${cfssl}.pem` },
    privateKey: { kubeadm: `${kubeadm}.key`, cfssl: `${cfssl}-key.pem` },
  };
}

function flags(service: Service, ...names: readonly string[]): FileSetting[] {
  return names.map((flag) => ({ service, flag }));
}

function kubeletConfigField(field: string): FileSetting {
  return { service: 'kubelet', configKind: 'KubeletConfiguration', field };
}

function fixedFlag(service: Service, flag: string, value: string): CompanionFlag {
  return { service, flag, value: () => value };
}

/** Formats milliseconds as a Go duration flag value: whole hours as `8760h`, else seconds or milliseconds. */
export function goDuration(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
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
 * kube-apiserver serving SANs, the same set on every master: every master's name, hostnames and
 * addresses, the in-cluster service names, the first IP of every service CIDR, loopback (binary
 * installs often point local components or a node-local proxy at https://127.0.0.1:6443), the
 * endpoint host clients dial and the extra SANs. One set means a client that reaches any master,
 * directly or behind a load balancer, verifies it the same way, so adding a master or a name
 * reissues the certificate of every master. DNS names are sorted and everything is deduplicated.
 */
export function apiServerSans({ inventory }: NodeContext): SanSet {
  const domain = inventory.clusterDomain;
  const masters = inventory.nodes.filter((candidate) => candidate.roles.includes('master'));
  const extra = splitNames([inventory.apiServer.host, ...inventory.apiServer.extraSANs]);
  const dnsNames = unique([
    ...masters.flatMap((master) => [master.name, ...master.hostnames]),
    'localhost',
    'kubernetes',
    'kubernetes.default',
    'kubernetes.default.svc',
    `kubernetes.default.svc.${domain}`,
    ...extra.dnsNames,
  ]).sort();
  const ipAddresses = unique([
    ...inventory.serviceCIDRs.map(firstAddressOfCidr),
    '127.0.0.1',
    ...masters.flatMap((master) => master.addresses),
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

/** Returns true unless the kubelet is TLS-bootstrapped, because such a kubelet requests its own certificates. */
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
    certificate: file({
      path: { kubeadm: `${PKI}/ca.crt`, cfssl: `${SSL}/ca.pem` },
      mode: CERT_MODE,
      roles: ['master', 'worker'],
      // NOTE: a bootstrapping kubelet serves a self-signed certificate unless its serverTLSBootstrap
      // is true, and --kubelet-certificate-authority then rejects it for logs and exec.
      settings: [
        ...flags('kube-apiserver', '--client-ca-file', '--kubelet-certificate-authority'),
        ...flags('kube-controller-manager', '--root-ca-file'),
        kubeletConfigField('authentication.x509.clientCAFile'),
      ],
    }),
    // While the CA rotates, ca.crt contains the old and the new CA. The controller-manager's signer
    // certificate must be the one CA that matches its key, and its --client-ca-file must not be a
    // bundle either, so both read this copy of the signing CA alone.
    signerCertificate: file({
      path: { kubeadm: `${PKI}/ca-signer.crt`, cfssl: `${SSL}/ca-signer.pem` },
      mode: CERT_MODE,
      roles: ['master'],
      settings: flags('kube-controller-manager', '--client-ca-file', '--cluster-signing-cert-file'),
    }),
    // The controller-manager's CSR signer needs the key; no other role ever receives it.
    privateKey: file({
      path: { kubeadm: `${PKI}/ca.key`, cfssl: `${SSL}/ca-key.pem` },
      mode: PRIVATE_MODE,
      roles: ['master'],
      settings: flags('kube-controller-manager', '--cluster-signing-key-file'),
      // Without this flag the signer gives the certificates of TLS-bootstrapped kubelets one year,
      // so they would lapse long before the certificates kubetrust issues.
      companions: [{ service: 'kube-controller-manager', flag: '--cluster-signing-duration', value: ({ inventory }) => goDuration(inventory.pki.certValidityMs) }],
    }),
  },
  {
    kind: 'ca',
    name: 'etcd-ca',
    description: 'etcd CA: trusted by etcd for peers and clients',
    commonName: 'etcd-ca',
    sharedWith: { when: (pki) => pki.etcdCA === 'shared', ca: 'cluster-ca' },
    certificate: file({
      path: { kubeadm: `${PKI}/etcd/ca.crt`, cfssl: `${SSL}/etcd-ca.pem` },
      mode: CERT_MODE,
      roles: ['etcd', 'master'],
      settings: [...flags('etcd', '--trusted-ca-file', '--peer-trusted-ca-file'), ...flags('kube-apiserver', '--etcd-cafile')],
      // Without these two flags etcd accepts clients and peers that present no certificate.
      companions: [fixedFlag('etcd', '--client-cert-auth', 'true'), fixedFlag('etcd', '--peer-client-cert-auth', 'true')],
    }),
  },
  {
    kind: 'ca',
    name: 'front-proxy-ca',
    description: 'Front-proxy CA: trusted by the apiserver for the aggregation layer',
    commonName: 'front-proxy-ca',
    certificate: file({
      path: { kubeadm: `${PKI}/front-proxy-ca.crt`, cfssl: `${SSL}/front-proxy-ca.pem` },
      mode: CERT_MODE,
      roles: ['master'],
      settings: [...flags('kube-apiserver', '--requestheader-client-ca-file'), ...flags('kube-controller-manager', '--requestheader-client-ca-file')],
    }),
  },
];

const SERVICE_ACCOUNT: KeyPairEntry = {
  kind: 'keypair',
  name: 'service-account',
  description: 'Service-account token signing key pair, the same on every master',
  privateKey: file({
    path: { kubeadm: `${PKI}/sa.key`, cfssl: `${SSL}/sa-key.pem` },
    mode: PRIVATE_MODE,
    roles: ['master'],
    settings: [...flags('kube-apiserver', '--service-account-signing-key-file'), ...flags('kube-controller-manager', '--service-account-private-key-file')],
    // kube-apiserver requires an issuer whenever it signs tokens. The API server's in-cluster URL is the usual choice.
    companions: [{ service: 'kube-apiserver', flag: '--service-account-issuer', value: ({ inventory }) => `https://kubernetes.default.svc.${inventory.clusterDomain}` }],
  }),
  publicKey: file({
    path: { kubeadm: `${PKI}/sa.pub`, cfssl: `${SSL}/sa.pub` },
    mode: CERT_MODE,
    roles: ['master'],
    settings: flags('kube-apiserver', '--service-account-key-file'),
  }),
};

interface LeafFiles {
  readonly paths: ReturnType<typeof pemPair>;
  readonly roles: readonly Role[];
  readonly certificateSettings: readonly FileSetting[];
  readonly keySettings: readonly FileSetting[];
  readonly companions?: readonly CompanionFlag[];
}

function leaf(
  name: string,
  description: string,
  parent: CaName,
  subject: LeafEntry['subject'],
  extKeyUsage: readonly ExtKeyUsage[],
  sans: LeafEntry['sans'],
  files: LeafFiles,
  extra: Partial<Pick<LeafEntry, 'requiredBindings' | 'when'>> = {},
): LeafEntry {
  const { paths, roles } = files;
  return {
    kind: 'leaf',
    name,
    description,
    parent,
    subject,
    extKeyUsage,
    sans,
    certificate: file({ path: paths.certificate, mode: CERT_MODE, roles, settings: files.certificateSettings, companions: files.companions ?? [] }),
    privateKey: file({ path: paths.privateKey, mode: PRIVATE_MODE, roles, settings: files.keySettings }),
    ...extra,
  };
}

const LEAVES: readonly LeafEntry[] = [
  leaf('apiserver', 'kube-apiserver serving certificate', 'cluster-ca', fixedSubject('kube-apiserver'), ['serverAuth'], apiServerSans, {
    paths: pemPair(`${PKI}/apiserver`, `${SSL}/kubernetes`),
    roles: ['master'],
    certificateSettings: flags('kube-apiserver', '--tls-cert-file'),
    keySettings: flags('kube-apiserver', '--tls-private-key-file'),
  }),
  leaf(
    'apiserver-kubelet-client',
    'kube-apiserver client certificate for kubelet APIs (logs, exec, metrics)',
    'cluster-ca',
    fixedSubject('kube-apiserver-kubelet-client'),
    ['clientAuth'],
    NO_SANS,
    {
      paths: pemPair(`${PKI}/apiserver-kubelet-client`, `${SSL}/apiserver-kubelet-client`),
      roles: ['master'],
      certificateSettings: flags('kube-apiserver', '--kubelet-client-certificate'),
      keySettings: flags('kube-apiserver', '--kubelet-client-key'),
    },
    // No group in the certificate: kubelets authorise this user through the binding instead of system:masters.
    { requiredBindings: () => [{ clusterRole: 'system:kubelet-api-admin', subjectKind: 'User', subjectName: 'kube-apiserver-kubelet-client' }] },
  ),
  leaf(
    'front-proxy-client',
    'kube-apiserver client certificate for aggregated API servers; its CN must be in --requestheader-allowed-names',
    'front-proxy-ca',
    fixedSubject(FRONT_PROXY_CLIENT_CN),
    ['clientAuth'],
    NO_SANS,
    {
      paths: pemPair(`${PKI}/front-proxy-client`, `${SSL}/front-proxy-client`),
      roles: ['master'],
      certificateSettings: flags('kube-apiserver', '--proxy-client-cert-file'),
      keySettings: flags('kube-apiserver', '--proxy-client-key-file'),
      companions: [fixedFlag('kube-apiserver', '--requestheader-allowed-names', FRONT_PROXY_CLIENT_CN)],
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
      paths: pemPair(`${PKI}/apiserver-etcd-client`, `${SSL}/apiserver-etcd-client`),
      roles: ['master'],
      certificateSettings: flags('kube-apiserver', '--etcd-certfile'),
      keySettings: flags('kube-apiserver', '--etcd-keyfile'),
    },
  ),
  // etcd's embedded gRPC gateway dials its own client port with the serving certificate, so the
  // server certificate needs clientAuth as well; peers listen and dial with the peer certificate.
  leaf('etcd-server', 'etcd serving certificate', 'etcd-ca', ({ node }) => ({ commonName: node.name, organizations: [] }), SERVER_AND_CLIENT, etcdMemberSans, {
    paths: pemPair(`${PKI}/etcd/server`, `${SSL}/etcd`),
    roles: ['etcd'],
    certificateSettings: flags('etcd', '--cert-file'),
    keySettings: flags('etcd', '--key-file'),
  }),
  leaf('etcd-peer', 'etcd peer certificate', 'etcd-ca', ({ node }) => ({ commonName: node.name, organizations: [] }), SERVER_AND_CLIENT, etcdMemberSans, {
    paths: pemPair(`${PKI}/etcd/peer`, `${SSL}/etcd-peer`),
    roles: ['etcd'],
    certificateSettings: flags('etcd', '--peer-cert-file'),
    keySettings: flags('etcd', '--peer-key-file'),
  }),
  leaf(
    'etcd-healthcheck-client',
    'Client certificate for etcd health checks',
    'etcd-ca',
    fixedSubject('kube-etcd-healthcheck-client'),
    ['clientAuth'],
    NO_SANS,
    {
      paths: pemPair(`${PKI}/etcd/healthcheck-client`, `${SSL}/etcd-healthcheck-client`),
      roles: ['etcd'],
      // Read by health checks and etcdctl, not by a service.
      certificateSettings: [],
      keySettings: [],
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
      paths: pemPair('/var/lib/kubelet/pki/kubelet', `${SSL}/kubelet`),
      roles: ['worker'],
      certificateSettings: [kubeletConfigField('tlsCertFile')],
      keySettings: [kubeletConfigField('tlsPrivateKeyFile')],
    },
    { when: preProvisionedKubelet },
  ),
];

function kubeconfig(
  name: string,
  description: string,
  subject: KubeconfigEntry['subject'],
  server: KubeconfigEntry['server'],
  spec: Omit<FileOptions, 'mode'>,
  extra: Partial<Pick<KubeconfigEntry, 'requiredBindings' | 'when'>> = {},
): KubeconfigEntry {
  return { kind: 'kubeconfig', name, description, parent: 'cluster-ca', subject, server, file: file({ ...spec, mode: PRIVATE_MODE }), ...extra };
}

/** kube-controller-manager and kube-scheduler read their kubeconfig through these three flags. */
function controlPlaneKubeconfigFlags(service: Service): FileSetting[] {
  return flags(service, '--kubeconfig', '--authentication-kubeconfig', '--authorization-kubeconfig');
}

const KUBECONFIGS: readonly KubeconfigEntry[] = [
  kubeconfig(
    'admin.conf',
    'Administrator kubeconfig; its group is spec.admin.group',
    ({ inventory }) => ({ commonName: 'kubernetes-admin', organizations: [inventory.admin.group] }),
    clusterEndpoint,
    // Read by kubectl, not by a service.
    { path: { kubeadm: '/etc/kubernetes/admin.conf', cfssl: '/root/.kube/config' }, roles: ['master'] },
    // system:masters bypasses authorisation; any other group needs cluster-admin bound to it.
    { requiredBindings: (inventory) => (inventory.admin.group === 'system:masters' ? [] : [{ clusterRole: 'cluster-admin', subjectKind: 'Group', subjectName: inventory.admin.group }]) },
  ),
  kubeconfig(
    'controller-manager.conf',
    'kube-controller-manager kubeconfig, pointing at the master\'s own apiserver',
    fixedSubject('system:kube-controller-manager'),
    ownApiServer,
    {
      path: { kubeadm: '/etc/kubernetes/controller-manager.conf', cfssl: '/etc/kubernetes/kube-controller-manager.kubeconfig' },
      roles: ['master'],
      settings: controlPlaneKubeconfigFlags('kube-controller-manager'),
      // Without it every controller runs with this kubeconfig, whose role system:kube-controller-manager
      // lacks the controllers' permissions. With it each controller uses its own service account.
      companions: [fixedFlag('kube-controller-manager', '--use-service-account-credentials', 'true')],
    },
  ),
  kubeconfig(
    'scheduler.conf',
    'kube-scheduler kubeconfig, pointing at the master\'s own apiserver',
    fixedSubject('system:kube-scheduler'),
    ownApiServer,
    {
      path: { kubeadm: '/etc/kubernetes/scheduler.conf', cfssl: '/etc/kubernetes/kube-scheduler.kubeconfig' },
      roles: ['master'],
      settings: controlPlaneKubeconfigFlags('kube-scheduler'),
    },
  ),
  kubeconfig(
    'kubelet.conf',
    'kubelet kubeconfig with the node\'s own client certificate',
    ({ node }) => ({ commonName: `system:node:${node.name}`, organizations: ['system:nodes'] }),
    clusterEndpoint,
    {
      path: { kubeadm: '/etc/kubernetes/kubelet.conf', cfssl: '/etc/kubernetes/kubelet.kubeconfig' },
      roles: ['worker'],
      settings: flags('kubelet', '--kubeconfig'),
    },
    { when: preProvisionedKubelet },
  ),
  kubeconfig('kube-proxy.conf', 'kube-proxy kubeconfig', fixedSubject('system:kube-proxy'), clusterEndpoint, {
    path: { kubeadm: '/etc/kubernetes/kube-proxy.conf', cfssl: '/etc/kubernetes/kube-proxy.kubeconfig' },
    roles: ['worker'],
    settings: [{ service: 'kube-proxy', configKind: 'KubeProxyConfiguration', field: 'clientConnection.kubeconfig' }],
  }),
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

/** Returns the CA that actually signs for `name`: etcd-ca is the cluster CA when etcd shares it. */
export function signingCa(name: CaName, pki: Pick<PkiSpec, 'layout' | 'etcdCA'>): CaName {
  const entry = caEntry(name);
  return entry.sharedWith?.when(pki) === true ? entry.sharedWith.ca : name;
}

/** CAs that have their own key pair with these PKI settings. */
export function casForPki(pki: Pick<PkiSpec, 'layout' | 'etcdCA'>): CaName[] {
  return CAS.filter((entry) => signingCa(entry.name, pki) === entry.name).map((entry) => entry.name);
}

/**
 * Returns the ClusterRoleBindings that the catalogue's certificates need in this cluster, once
 * each: the kubelet client's access to the kubelet API, and the admin group's binding to
 * cluster-admin when that group is not system:masters.
 */
export function requiredBindingsOf(inventory: Inventory): RequiredBinding[] {
  const seen = new Set<string>();
  const bindings: RequiredBinding[] = [];
  for (const entry of CATALOGUE) {
    if (entry.kind !== 'leaf' && entry.kind !== 'kubeconfig') continue;
    for (const binding of entry.requiredBindings?.(inventory) ?? []) {
      const key = `${binding.clusterRole}\u0000${binding.subjectKind}\u0000${binding.subjectName}`;
      if (seen.has(key)) continue;
      seen.add(key);
      bindings.push(binding);
    }
  }
  return bindings;
}
