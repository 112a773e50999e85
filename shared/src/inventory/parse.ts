/**
 * Reads a cluster inventory from YAML and validates it into the readonly `Inventory`. Every
 * problem found becomes an issue with a path, a message and a fix, and all of them are
 * thrown together in one `InventoryError`. Nodes are checked in `./nodes.ts`.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseAllDocuments, type YAMLError } from 'yaml';

import { KEY_ALGORITHMS, type KeyAlgorithm } from '../pki/keys';
import { formatDuration, parseDuration } from './duration';
import { describeValue, IssueList, isMapping, MappingReader, readChoice } from './fields';
import {
  DNS_NAME_RULES,
  hasFirstAddress,
  isDnsLabel,
  isDnsName,
  isDnsNameOrWildcard,
  isUnspecifiedIP,
  joinHostPort,
  normalizeIP,
  parseCidr,
  parseHost,
  parsePort,
  splitHostPort,
  suggestDnsName,
  type Cidr,
} from './net';
import { DEFAULT_AGENT_PORT, readNodes } from './nodes';
import { DEFAULT_AGENT_PREFIX, DEFAULT_SSH_PORT, DEFAULT_SSH_USER, defaultSshContext, readClusterSsh, type SshContext } from './ssh';
import {
  ETCD_CA_MODES,
  InventoryError,
  KUBELET_CREDENTIALS,
  PATH_LAYOUTS,
  PKI_LAYOUTS,
  type KubeletCredentials,
  type ApiServerSpec,
  type Inventory,
  type ParsedInventory,
  type EtcdCaMode,
  type PkiLayout,
  type PkiSpec,
} from './types';

export const API_VERSION = 'kubetrust/v1';
export const KIND = 'Cluster';

/** Default values of the optional inventory fields. */
export const INVENTORY_DEFAULTS = {
  clusterDomain: 'cluster.local',
  serviceCIDR: '10.96.0.0/12',
  apiServerPort: 443,
  layout: 'kubeadm',
  keyAlgorithm: 'RSA-2048',
  caValidity: '87600h',
  certValidity: '8760h',
  pathLayout: 'kubeadm',
  adminGroup: 'system:masters',
  kubeletCredentials: 'pre-provisioned',
  agentPort: DEFAULT_AGENT_PORT,
  agentPrefix: DEFAULT_AGENT_PREFIX,
  sshPort: DEFAULT_SSH_PORT,
  sshUser: DEFAULT_SSH_USER,
} as const satisfies {
  readonly layout: PkiLayout;
  readonly keyAlgorithm: KeyAlgorithm;
  readonly [key: string]: string | number;
};

/** The latest time an X.509 certificate can expire: RFC 5280 encodes years with four digits. */
const LATEST_CERTIFICATE_EXPIRY_MS = Date.UTC(9999, 11, 31, 23, 59, 59);

/** Inputs besides the inventory text that the SSH defaults depend on. */
export interface InventoryOptions {
  /** Defaults to `process.env`. `SSH_AUTH_SOCK` there turns on `ssh.agent` by default. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Replaces `~` in SSH file paths; defaults to the home directory of the current user. */
  readonly homeDir?: string;
  /** Relative SSH file paths are resolved against it: the inventory's directory, or the working directory. */
  readonly baseDir?: string;
}

/**
 * Parses and validates an inventory. `source` names the text in the error, usually its file
 * path. Throws `InventoryError` listing every issue found.
 */
export function parseInventory(text: string, source: string, options: InventoryOptions = {}): ParsedInventory {
  const issues = new IssueList();
  const warnings = new IssueList();

  const root = readDocument(text, issues);
  if (root === undefined) {
    throw new InventoryError(source, issues.items);
  }

  const defaults = defaultSshContext(options.baseDir);
  const sshContext: SshContext = {
    env: options.env ?? defaults.env,
    homeDir: options.homeDir ?? defaults.homeDir,
    baseDir: defaults.baseDir,
  };
  const inventory = readCluster(root, sshContext, issues, warnings);
  if (issues.items.length > 0) {
    throw new InventoryError(source, issues.items);
  }
  if (inventory === undefined) {
    throw new Error(`Internal error: the inventory ${source} was rejected without an issue.`);
  }
  return { inventory, warnings: warnings.items };
}

/**
 * Reads the inventory file and parses it with `parseInventory`. A file that cannot be read
 * is an `InventoryError` with the path `(file)`.
 */
export function loadInventory(file: string, options: InventoryOptions = {}): ParsedInventory {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    const issues = new IssueList();
    reportUnreadableFile(file, error, issues);
    throw new InventoryError(file, issues.items);
  }
  return parseInventory(text, file, { ...options, baseDir: options.baseDir ?? path.dirname(path.resolve(file)) });
}

function reportUnreadableFile(file: string, error: unknown, issues: IssueList): void {
  const code = error instanceof Error && 'code' in error ? String(error.code) : undefined;
  switch (code) {
    case 'ENOENT':
      issues.add('(file)', `file not found: ${file}`, 'check the path, or copy examples/cluster.yaml and edit it');
      return;
    case 'EACCES':
    case 'EPERM':
      issues.add(
        '(file)',
        `permission denied reading ${file}`,
        `make ${file} readable by the user that runs kubetrust, for example with chmod u+r`,
      );
      return;
    case 'EISDIR':
      issues.add('(file)', `${file} is a directory`, `pass the inventory file inside it, such as ${file}/cluster.yaml`);
      return;
    default: {
      const reason = error instanceof Error ? error.message : String(error);
      issues.add('(file)', `failed to read ${file}: ${reason}`, `check that ${file} is a readable YAML file`);
    }
  }
}

/**
 * Parses the YAML text into plain values, with mappings as `Map`. Returns undefined after
 * reporting one issue when the text is not exactly one well-formed YAML document.
 */
function readDocument(text: string, issues: IssueList): unknown {
  const documents = parseAllDocuments(text);

  for (const document of documents) {
    const error = document.errors[0];
    if (error !== undefined) {
      reportYamlError(error, issues);
      return undefined;
    }
  }

  const [document] = documents;
  if (document === undefined) {
    issues.add('(document)', 'the inventory is empty', 'write a Cluster document as in examples/cluster.yaml');
    return undefined;
  }
  if (documents.length > 1) {
    issues.add(
      '(yaml)',
      `the text contains ${documents.length} YAML documents, but an inventory is a single document`,
      'remove the "---" separators and keep only the Cluster document',
    );
    return undefined;
  }

  let root: unknown;
  try {
    root = document.toJS({ mapAsMap: true, maxAliasCount: 100 });
  } catch (error) {
    // toJS throws for aliases it cannot resolve, such as an alias before its anchor.
    const reason = error instanceof Error ? error.message : String(error);
    issues.add('(yaml)', `failed to resolve YAML aliases: ${reason}`, 'define each &anchor before its *alias');
    return undefined;
  }

  if (root === null || root === undefined) {
    issues.add('(document)', 'the inventory is empty', 'write a Cluster document as in examples/cluster.yaml');
    return undefined;
  }
  return root;
}

const YAML_ERROR_FIXES: Readonly<Record<string, string>> = {
  TAB_AS_INDENT: 'indent with spaces, because YAML does not allow tabs for indentation',
  DUPLICATE_KEY: 'remove the repeated key or merge its values into the first one',
  MISSING_CHAR: 'add the missing closing quote or bracket',
  BAD_INDENT: 'check the indentation there and that every "[" or "{" before it is closed',
  BLOCK_AS_IMPLICIT_KEY: 'put a nested mapping on its own, more indented lines, or quote a value that contains ": "',
};

function reportYamlError(error: YAMLError, issues: IssueList): void {
  const position = error.linePos?.[0];
  const where = position === undefined ? 'at an unknown position' : `at line ${position.line}, column ${position.col}`;
  // The library appends its own position and a source excerpt after the first line.
  const summary = (error.message.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?$/, '');
  const fix = YAML_ERROR_FIXES[error.code] ?? `correct the YAML syntax ${where}`;
  issues.add('(yaml)', `YAML syntax error ${where}: ${summary}`, fix);
}

const SPEC_EXAMPLE =
  '{apiServer: {endpoint: "https://192.0.2.100:6443"}, nodes: [{name: master-1, addresses: [192.0.2.21], roles: [etcd, master]}]}';

function readCluster(root: unknown, sshContext: SshContext, issues: IssueList, warnings: IssueList): Inventory | undefined {
  if (!isMapping(root)) {
    issues.add(
      '(document)',
      `expected a mapping with apiVersion, kind, metadata and spec at the top level, found ${describeValue(root)}`,
      'write a Cluster document as in examples/cluster.yaml',
    );
    return undefined;
  }
  const document = MappingReader.of(root, '', ['apiVersion', 'kind', 'metadata', 'spec'], '', issues);
  if (document === undefined) {
    return undefined;
  }

  const apiVersion = document.requiredString('apiVersion', API_VERSION);
  if (apiVersion !== undefined && apiVersion !== API_VERSION) {
    issues.add('apiVersion', `unsupported apiVersion "${apiVersion}"`, `write apiVersion: ${API_VERSION}`);
  }
  const kind = document.requiredString('kind', KIND);
  if (kind !== undefined && kind !== KIND) {
    issues.add('kind', `unsupported kind "${kind}"`, `write kind: ${KIND}`);
  }

  const metadata = document.requiredMapping('metadata', ['name'], '{name: demo}');
  const name = metadata === undefined ? undefined : readClusterName(metadata, issues);

  const specReader = document.requiredMapping(
    'spec',
    ['clusterDomain', 'serviceCIDR', 'apiServer', 'pki', 'admin', 'kubelet', 'ssh', 'nodes'],
    SPEC_EXAMPLE,
  );
  const spec = specReader === undefined ? undefined : readSpec(specReader, sshContext, issues, warnings);

  if (name === undefined || spec === undefined) {
    return undefined;
  }
  return { name, ...spec };
}

function readClusterName(metadata: MappingReader, issues: IssueList): string | undefined {
  const name = metadata.requiredString('name', 'demo');
  if (name === undefined || isDnsLabel(name)) {
    return name;
  }
  const suggestion = suggestDnsName(name, isDnsLabel);
  issues.add(
    metadata.pathOf('name'),
    `cluster name "${name}" is not a DNS-1123 label`,
    suggestion === undefined
      ? 'use 1 to 63 lowercase letters, digits and "-", starting and ending with a letter or digit, such as demo'
      : `write name: ${suggestion}`,
  );
  return undefined;
}

function readSpec(
  spec: MappingReader,
  sshContext: SshContext,
  issues: IssueList,
  warnings: IssueList,
): Omit<Inventory, 'name'> | undefined {
  const clusterDomain = readClusterDomain(spec, issues);
  const serviceCIDRs = readServiceCidrs(spec, issues);

  const apiServerReader = spec.requiredMapping(
    'apiServer',
    ['endpoint', 'extraSANs'],
    '{endpoint: "https://192.0.2.100:6443"}',
  );
  const apiServer = apiServerReader === undefined ? undefined : readApiServer(apiServerReader, issues);

  const pkiReader = spec.optionalMapping(
    'pki',
    ['layout', 'keyAlgorithm', 'caValidity', 'certValidity', 'etcdCA', 'pathLayout', 'pathOverrides'],
    '{layout: kubeadm, keyAlgorithm: RSA-2048}',
  );
  const pki = pkiReader === undefined ? undefined : readPki(pkiReader, issues);

  const admin = readAdmin(spec, issues);
  const kubelet = readKubelet(spec, issues);
  const ssh = readClusterSsh(spec, sshContext, issues);
  const nodes = readNodes(spec, issues, warnings, kubelet ?? INVENTORY_DEFAULTS.kubeletCredentials, ssh ?? {}, sshContext);

  if (
    clusterDomain === undefined ||
    serviceCIDRs === undefined ||
    apiServer === undefined ||
    pki === undefined ||
    admin === undefined ||
    kubelet === undefined ||
    nodes === undefined
  ) {
    return undefined;
  }
  return { clusterDomain, serviceCIDRs, apiServer, pki, admin: { group: admin }, kubelet: { credentials: kubelet }, nodes };
}

function readClusterDomain(spec: MappingReader, issues: IssueList): string | undefined {
  const domain = spec.optionalString('clusterDomain', 'cluster.local', INVENTORY_DEFAULTS.clusterDomain);
  if (domain === undefined || isDnsName(domain)) {
    return domain;
  }
  const suggestion = suggestDnsName(domain, isDnsName);
  issues.add(
    spec.pathOf('clusterDomain'),
    `cluster domain "${domain}" is not a valid DNS name`,
    suggestion === undefined
      ? `${DNS_NAME_RULES}, such as cluster.local`
      : `write clusterDomain: ${suggestion}`,
  );
  return undefined;
}

const DUAL_STACK_EXAMPLE = '10.96.0.0/12,fd00:10:96::/112';

/**
 * Reads `serviceCIDR`: one CIDR, or an IPv4 and an IPv6 CIDR separated by a comma, as
 * kube-apiserver's --service-cluster-ip-range takes them.
 */
function readServiceCidrs(spec: MappingReader, issues: IssueList): readonly string[] | undefined {
  const path = spec.pathOf('serviceCIDR');
  const text = spec.optionalString('serviceCIDR', INVENTORY_DEFAULTS.serviceCIDR, INVENTORY_DEFAULTS.serviceCIDR);
  if (text === undefined) {
    return undefined;
  }

  const parts = text.split(',').map((part) => part.trim());
  if (parts.length > 2) {
    issues.add(
      path,
      `serviceCIDR "${text}" lists ${parts.length} CIDRs, but at most two are allowed`,
      `write one CIDR, or an IPv4 and an IPv6 CIDR separated by a comma, such as ${DUAL_STACK_EXAMPLE}`,
    );
    return undefined;
  }

  const cidrs: Cidr[] = [];
  for (const part of parts) {
    const cidr = readServiceCidr(part, text, path, issues);
    if (cidr !== undefined) {
      cidrs.push(cidr);
    }
  }
  if (cidrs.length !== parts.length) {
    return undefined;
  }

  const [first, second] = cidrs;
  if (first !== undefined && second !== undefined && first.network.family === second.network.family) {
    issues.add(
      path,
      `serviceCIDR "${text}" lists two IPv${first.network.family} CIDRs`,
      `for dual-stack, pair one IPv4 and one IPv6 CIDR, such as ${DUAL_STACK_EXAMPLE}`,
    );
    return undefined;
  }
  return cidrs.map((cidr) => cidr.text);
}

function readServiceCidr(part: string, text: string, path: string, issues: IssueList): Cidr | undefined {
  if (part === '') {
    issues.add(
      path,
      `serviceCIDR "${text}" contains an empty CIDR`,
      `write one CIDR such as ${INVENTORY_DEFAULTS.serviceCIDR}, or two separated by a comma such as ${DUAL_STACK_EXAMPLE}`,
    );
    return undefined;
  }

  const result = parseCidr(part);
  if (!result.ok) {
    switch (result.problem) {
      case 'missing-prefix':
        issues.add(
          path,
          `CIDR "${part}" has no prefix length`,
          `write the network address and its prefix length, such as ${INVENTORY_DEFAULTS.serviceCIDR}`,
        );
        break;
      case 'invalid-address':
        issues.add(
          path,
          `invalid network address "${result.address}" in CIDR "${part}"`,
          `write an IPv4 CIDR such as ${INVENTORY_DEFAULTS.serviceCIDR} or an IPv6 CIDR such as fd00:10:96::/112`,
        );
        break;
      case 'invalid-prefix':
        issues.add(
          path,
          `prefix length "${result.prefix}" in CIDR "${part}" is out of range for IPv${result.family}`,
          `write a prefix length from 0 to ${result.maxPrefixLength}, such as ${result.family === 4 ? '/12' : '/112'}`,
        );
        break;
      case 'host-bits-set':
        issues.add(
          path,
          `CIDR "${part}" has bits set after its prefix length`,
          `write the network address of the range: ${result.network}`,
        );
        break;
    }
    return undefined;
  }

  if (!hasFirstAddress(result.cidr)) {
    issues.add(
      path,
      `service CIDR "${part}" is a single address and leaves none for the kubernetes service`,
      `use a shorter prefix length, such as ${result.cidr.network.family === 4 ? '/12' : '/112'}`,
    );
    return undefined;
  }
  return result.cidr;
}

const ENDPOINT_HOST_FIX =
  'write an IPv4 address, an IPv6 address in brackets or a lowercase DNS name, such as ' +
  'https://192.0.2.100:6443, https://[2001:db8::100]:6443 or https://api.demo.example:6443';

function readApiServer(apiServer: MappingReader, issues: IssueList): ApiServerSpec | undefined {
  const endpointText = apiServer.requiredString('endpoint', '"https://192.0.2.100:6443"');
  const endpoint =
    endpointText === undefined ? undefined : parseApiServerEndpoint(endpointText, apiServer.pathOf('endpoint'), issues);
  const extraSANs = readExtraSans(apiServer, issues);

  if (endpoint === undefined || extraSANs === undefined) {
    return undefined;
  }
  return { ...endpoint, extraSANs };
}

/**
 * Parses the API server URL. It must be `https://host[:port]` with no user information,
 * path, query or fragment. The returned endpoint always names the port, such as
 * `https://192.0.2.100:443` for `https://192.0.2.100`.
 */
function parseApiServerEndpoint(
  text: string,
  path: string,
  issues: IssueList,
): Omit<ApiServerSpec, 'extraSANs'> | undefined {
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\//.exec(text);
  const rest = scheme === null ? text : text.slice(scheme[0].length);

  // The authority ends at the first "/", "?" or "#".
  const authorityEnd = rest.search(/[/?#]/);
  const authority = authorityEnd < 0 ? rest : rest.slice(0, authorityEnd);
  const suffix = authorityEnd < 0 ? '' : rest.slice(authorityEnd);
  const at = authority.lastIndexOf('@');
  const hostPort = authority.slice(at + 1);

  if (scheme === null) {
    const fix =
      hostPort === '' || splitHostPort(hostPort) === undefined
        ? 'write an https URL such as https://192.0.2.100:6443'
        : `write https://${hostPort}`;
    issues.add(path, `endpoint "${text}" is not an https URL`, fix);
    return undefined;
  }

  // Report a wrong scheme and any path or query together, then go on to check the host.
  let valid = true;
  if (scheme[1]!.toLowerCase() !== 'https') {
    issues.add(path, `endpoint "${text}" uses ${scheme[1]} instead of https`, `write https://${hostPort}`);
    valid = false;
  }

  const extras = describeUrlSuffix(suffix);
  if (at >= 0) {
    extras.unshift(`user information ("${authority.slice(0, at + 1)}")`);
  }
  if (extras.length > 0) {
    issues.add(
      path,
      `endpoint "${text}" has ${joinWithAnd(extras)}`,
      `write only the scheme, host and port: https://${hostPort}`,
    );
    valid = false;
  }

  const parts = splitHostPort(hostPort);
  if (parts === undefined) {
    const fix = hostPort.includes(':')
      ? 'put an IPv6 address in brackets and the port after them, such as https://[2001:db8::100]:6443'
      : ENDPOINT_HOST_FIX;
    issues.add(path, `invalid host and port "${hostPort}" in endpoint "${text}"`, fix);
    return undefined;
  }

  const host = parseHost(parts.host, parts.bracketed);
  if (host === undefined) {
    const message = parts.host === '' ? `endpoint "${text}" has no host` : `invalid host "${parts.host}" in endpoint "${text}"`;
    issues.add(path, message, ENDPOINT_HOST_FIX);
    return undefined;
  }
  if (host.ip !== undefined && isUnspecifiedIP(host.ip)) {
    issues.add(
      path,
      `endpoint "${text}" has the unspecified address ${host.host} as its host`,
      'write the address that clients connect to, such as https://192.0.2.100:6443',
    );
    return undefined;
  }

  let port: number = INVENTORY_DEFAULTS.apiServerPort;
  if (parts.port !== undefined) {
    const parsed = parsePort(parts.port);
    if (parsed === undefined) {
      issues.add(
        path,
        `invalid port "${parts.port}" in endpoint "${text}"`,
        `write a port from 1 to 65535, such as https://${joinHostPort(host.host, 6443)}`,
      );
      return undefined;
    }
    port = parsed;
  }

  if (!valid) {
    return undefined;
  }
  return {
    endpoint: `https://${joinHostPort(host.host, port)}`,
    host: host.host,
    hostIsIP: host.isIP,
    port,
  };
}

/** Joins phrases as "a", "a and b" or "a, b and c". */
function joinWithAnd(phrases: readonly string[]): string {
  if (phrases.length <= 1) {
    return phrases.join('');
  }
  return `${phrases.slice(0, -1).join(', ')} and ${phrases[phrases.length - 1]}`;
}

/** Names the path, query and fragment in the part of a URL after its authority. */
function describeUrlSuffix(suffix: string): string[] {
  const queryStart = suffix.search(/[?#]/);
  const pathPart = queryStart < 0 ? suffix : suffix.slice(0, queryStart);
  const fragmentStart = suffix.indexOf('#');
  const queryPart =
    queryStart >= 0 && suffix[queryStart] === '?'
      ? suffix.slice(queryStart, fragmentStart < 0 ? undefined : fragmentStart)
      : '';
  const fragmentPart = fragmentStart < 0 ? '' : suffix.slice(fragmentStart);

  const extras: string[] = [];
  // A lone "/" is allowed because an https URL means the same with or without it.
  if (pathPart !== '' && pathPart !== '/') {
    extras.push(`a path ("${pathPart}")`);
  }
  if (queryPart !== '') {
    extras.push(`a query ("${queryPart}")`);
  }
  if (fragmentPart !== '') {
    extras.push(`a fragment ("${fragmentPart}")`);
  }
  return extras;
}

/** Reads `extraSANs`: IP addresses, normalised, and DNS names, which may start with a `*.` label. */
function readExtraSans(apiServer: MappingReader, issues: IssueList): readonly string[] | undefined {
  const list = apiServer.optionalList('extraSANs', '[api.demo.example]');
  if (list === undefined) {
    return undefined;
  }

  const sans: string[] = [];
  let valid = true;
  list.forEach((value, index) => {
    const path = `${apiServer.pathOf('extraSANs')}[${index}]`;
    if (typeof value !== 'string') {
      issues.add(
        path,
        `expected an IP address or DNS name, found ${describeValue(value)}`,
        'write an IP address such as 192.0.2.100 or a DNS name such as api.demo.example',
      );
      valid = false;
      return;
    }

    const ip = normalizeIP(value);
    if (ip !== undefined) {
      sans.push(ip);
      return;
    }
    if (isDnsNameOrWildcard(value)) {
      sans.push(value);
      return;
    }

    issues.add(path, `extra SAN "${value}" is neither an IP address nor a valid DNS name`, extraSanFix(value));
    valid = false;
  });
  return valid ? sans : undefined;
}

/** Suggests what to write instead of an extra SAN that is neither an IP address nor a DNS name. */
function extraSanFix(value: string): string {
  const slash = value.indexOf('/');
  const network = slash === -1 ? undefined : normalizeIP(value.slice(0, slash));
  if (network !== undefined) {
    return `write the single address ${network}: a certificate names addresses, not networks`;
  }
  const hostAndPort = /^([^:]+):\d+$/.exec(value);
  if (hostAndPort !== null) {
    return `write ${hostAndPort[1]} without the port: a certificate names hosts, and the port belongs in apiServer.endpoint`;
  }
  if (value.includes(':')) {
    return 'write a valid IPv6 address such as 2001:db8::10, or a DNS name such as api.demo.example';
  }
  const suggestion = suggestDnsName(value, isDnsNameOrWildcard);
  if (suggestion !== undefined) {
    return `write ${suggestion}`;
  }
  return 'write an IP address such as 192.0.2.100, a lowercase DNS name such as api.demo.example, or a wildcard such as *.demo.example';
}

function readPki(pki: MappingReader, issues: IssueList): PkiSpec | undefined {
  const layout = readChoice(pki, 'layout', PKI_LAYOUTS, INVENTORY_DEFAULTS.layout, 'PKI layout', issues);
  const keyAlgorithm = readChoice(
    pki,
    'keyAlgorithm',
    KEY_ALGORITHMS,
    INVENTORY_DEFAULTS.keyAlgorithm,
    'key algorithm',
    issues,
  );
  const caValidity = readValidity(pki, 'caValidity', INVENTORY_DEFAULTS.caValidity, issues);
  const certValidity = readValidity(pki, 'certValidity', INVENTORY_DEFAULTS.certValidity, issues);

  if (caValidity !== undefined && certValidity !== undefined && certValidity.ms >= caValidity.ms) {
    const caText = pki.has('caValidity') ? caValidity.text : `${caValidity.text} (the default)`;
    const suggestion = formatDuration(Math.min(caValidity.ms / 2, parseDuration(INVENTORY_DEFAULTS.certValidity)!));
    issues.add(
      pki.pathOf('certValidity'),
      `certValidity ${certValidity.text} is not shorter than caValidity ${caText}`,
      `write a certValidity shorter than ${caValidity.text}, such as ${suggestion}, or raise caValidity`,
    );
    return undefined;
  }

  const etcdCA = readEtcdCaMode(pki, layout, issues);
  const pathLayout = readChoice(pki, 'pathLayout', PATH_LAYOUTS, INVENTORY_DEFAULTS.pathLayout, 'path layout', issues);
  const pathOverrides = readPathOverrides(pki, issues);
  if (
    layout === undefined ||
    keyAlgorithm === undefined ||
    caValidity === undefined ||
    certValidity === undefined ||
    etcdCA === undefined ||
    pathLayout === undefined ||
    pathOverrides === undefined
  ) {
    return undefined;
  }
  return { layout, keyAlgorithm, caValidityMs: caValidity.ms, certValidityMs: certValidity.ms, etcdCA, pathLayout, pathOverrides };
}

/** Reads `etcdCA`: kubeadm always keeps etcd on its own CA; single-ca shares the cluster CA unless etcdCA is separate. */
function readEtcdCaMode(pki: MappingReader, layout: PkiLayout | undefined, issues: IssueList): EtcdCaMode | undefined {
  const fallback = layout === 'single-ca' ? 'shared' : 'separate';
  const mode = readChoice(pki, 'etcdCA', ETCD_CA_MODES, fallback, 'etcd CA mode', issues);
  if (mode === 'shared' && layout === 'kubeadm') {
    issues.add(
      pki.pathOf('etcdCA'),
      'etcdCA "shared" is not possible with layout kubeadm, which always gives etcd its own CA',
      'remove etcdCA, or write layout: single-ca to sign etcd certificates with the cluster CA',
    );
    return undefined;
  }
  return mode;
}

/** Reads `pathOverrides`: catalogue file keys such as `apiserver.certificate` mapped to absolute node paths. */
function readPathOverrides(pki: MappingReader, issues: IssueList): Readonly<Record<string, string>> | undefined {
  const raw = pki.raw('pathOverrides');
  if (raw === undefined || raw === null) {
    return {};
  }
  const example = '{apiserver.certificate: /etc/kubernetes/ssl/kubernetes.pem}';
  if (!isMapping(raw)) {
    issues.add(pki.pathOf('pathOverrides'), `expected a mapping, found ${describeValue(raw)}`, `write a mapping such as ${example}`);
    return undefined;
  }
  const overrides: Record<string, string> = {};
  let valid = true;
  for (const [key, value] of raw) {
    const path = `${pki.pathOf('pathOverrides')}.${String(key)}`;
    if (typeof key !== 'string' || !/^[a-z0-9.-]+\.[A-Za-z]+$/.test(key)) {
      issues.add(path, `"${String(key)}" is not written as <entry>.<file>`, 'write a key such as apiserver.certificate, apiserver.privateKey or admin.conf.file');
      valid = false;
      continue;
    }
    if (typeof value !== 'string' || !value.startsWith('/') || value.split('/').includes('..') || value.endsWith('/')) {
      issues.add(path, `path ${describeValue(value)} is not an absolute file path`, 'write an absolute path without ".." such as /etc/kubernetes/ssl/kubernetes.pem');
      valid = false;
      continue;
    }
    overrides[key] = value;
  }
  return valid ? overrides : undefined;
}

/** Characters allowed in a group name; a stray comma or space would make a group that no binding names. */
const GROUP_NAME = /^[A-Za-z0-9](?:[A-Za-z0-9:._-]*[A-Za-z0-9])?$/;

function readAdmin(spec: MappingReader, issues: IssueList): string | undefined {
  const admin = spec.optionalMapping('admin', ['group'], '{group: system:masters}') ?? MappingReader.empty(spec.pathOf('admin'), issues);
  const group = admin.optionalString('group', 'system:masters', INVENTORY_DEFAULTS.adminGroup);
  if (group === undefined || GROUP_NAME.test(group)) {
    return group;
  }
  issues.add(
    admin.pathOf('group'),
    `group "${group}" contains characters that are not allowed, such as spaces or a trailing comma`,
    'write a group of letters, digits and ":._-" such as system:masters or kubetrust:cluster-admins',
  );
  return undefined;
}

function readKubelet(spec: MappingReader, issues: IssueList): KubeletCredentials | undefined {
  const kubelet = spec.optionalMapping('kubelet', ['credentials'], '{credentials: pre-provisioned}') ?? MappingReader.empty(spec.pathOf('kubelet'), issues);
  return readChoice(kubelet, 'credentials', KUBELET_CREDENTIALS, INVENTORY_DEFAULTS.kubeletCredentials, 'kubelet credentials mode', issues);
}

/** Reads a validity duration and returns it in milliseconds with the text it came from. */
function readValidity(
  pki: MappingReader,
  key: string,
  fallback: string,
  issues: IssueList,
): { readonly ms: number; readonly text: string } | undefined {
  const text = pki.optionalString(key, fallback, fallback);
  if (text === undefined) {
    return undefined;
  }

  const path = pki.pathOf(key);
  const ms = parseDuration(text);
  if (ms === undefined) {
    issues.add(
      path,
      `invalid duration "${text}"`,
      `write a number with the units d, h, m or s, such as ${fallback}, 90m, 1h30m or 365d`,
    );
    return undefined;
  }
  if (ms <= 0) {
    issues.add(path, `duration "${text}" is not positive`, `write a positive duration such as ${fallback}`);
    return undefined;
  }
  if (Date.now() + ms > LATEST_CERTIFICATE_EXPIRY_MS) {
    issues.add(
      path,
      `duration "${text}" ends after 9999-12-31, the latest expiry date a certificate can encode`,
      `write a shorter duration such as ${fallback}`,
    );
    return undefined;
  }
  return { ms, text };
}
