/**
 * Reads `spec.nodes`: the fields of each node, then the rules that span nodes. Names,
 * addresses, hostnames and agent endpoints must be unique, and at least one node must have
 * each of the etcd and master roles.
 */
import { describeValue, findSimilarName, indexPath, IssueList, MappingReader, readChoice } from './fields';
import {
  DNS_NAME_RULES,
  ipFamily,
  isDnsName,
  isDnsSubdomain,
  isUnspecifiedIP,
  joinHostPort,
  parseHost,
  parseIP,
  parsePort,
  formatIP,
  splitHostPort,
  suggestDnsName,
} from './net';
import { readAgentPrefix, readNodeSsh, type SshContext, type SshDraft } from './ssh';
import { KUBELET_CREDENTIALS, ROLES, type AgentEndpoint, type KubeletCredentials, type NodeSpec, type Role } from './types';

/** Agent port used when a node does not set `agent.endpoint`. */
export const DEFAULT_AGENT_PORT = 7443;

const NODE_FIELDS = ['name', 'addresses', 'hostnames', 'roles', 'agent', 'kubelet', 'ssh'] as const;
const NODE_EXAMPLE = '{name: etcd-1, addresses: [192.0.2.11], roles: [etcd]}';
const ADDRESS_FIX = 'write an IPv4 address such as 192.0.2.21 or an IPv6 address such as 2001:db8::21';
const AGENT_HOST_FIX =
  'write an IPv4 address, an IPv6 address in brackets or a lowercase DNS name before the port, ' +
  `such as 192.0.2.11:${DEFAULT_AGENT_PORT} or [2001:db8::11]:${DEFAULT_AGENT_PORT}`;

/** A value with the path it was read from. */
interface Located<T> {
  readonly value: T;
  readonly path: string;
}

interface LocatedAgent extends AgentEndpoint {
  readonly path: string;
  readonly prefix: string;
  /** True when the endpoint was built from the first address and the default port. */
  readonly defaulted: boolean;
}

/** The readable fields of one node, kept even when others are invalid, for the checks across nodes. */
interface NodeDraft {
  readonly path: string;
  readonly name: string | undefined;
  /** Valid addresses, normalised, without repeats. */
  readonly addresses: readonly Located<string>[];
  readonly hostnames: readonly Located<string>[];
  readonly roles: readonly Role[];
  readonly agent: LocatedAgent | undefined;
  /** The node, or undefined when one of its own fields has an issue. */
  readonly spec: NodeSpec | undefined;
}

/**
 * Reads and checks `spec.nodes`. Returns undefined when an issue was reported, which includes
 * a missing `nodes` field. Warnings, such as an even number of etcd members, go to `warnings`.
 */
export function readNodes(
  spec: MappingReader,
  issues: IssueList,
  warnings: IssueList,
  kubeletDefault: KubeletCredentials,
  clusterSsh: SshDraft,
  sshContext: SshContext,
): readonly NodeSpec[] | undefined {
  const list = spec.requiredList('nodes', `[${NODE_EXAMPLE}]`);
  if (list === undefined) {
    return undefined;
  }

  const path = spec.pathOf('nodes');
  const drafts = list.map((value, index) =>
    readNode(value, indexPath(path, index), kubeletDefault, clusterSsh, sshContext, issues),
  );

  checkUniqueNames(drafts, issues);
  checkUniqueValues(drafts, (draft) => draft.addresses, 'address', 'addresses', issues);
  checkUniqueValues(drafts, (draft) => draft.hostnames, 'hostname', 'hostnames', issues);
  checkUniqueAgentEndpoints(drafts, issues);
  checkRoleCounts(drafts, path, issues, warnings);

  const nodes: NodeSpec[] = [];
  for (const draft of drafts) {
    if (draft.spec === undefined) {
      return undefined;
    }
    nodes.push(draft.spec);
  }
  return nodes;
}

function readNode(
  value: unknown,
  path: string,
  kubeletDefault: KubeletCredentials,
  clusterSsh: SshDraft,
  sshContext: SshContext,
  issues: IssueList,
): NodeDraft {
  const issueCount = issues.items.length;
  const node = MappingReader.of(value, path, NODE_FIELDS, NODE_EXAMPLE, issues);
  if (node === undefined) {
    return { path, name: undefined, addresses: [], hostnames: [], roles: [], agent: undefined, spec: undefined };
  }

  const name = readNodeName(node, issues);
  const writtenName = node.raw('name');
  const label = typeof writtenName === 'string' ? `node "${writtenName}"` : 'this node';
  const addresses = readAddresses(node, label, issues);
  const hostnames = readHostnames(node, label, issues);
  const roles = readRoles(node, label, issues);
  const agent = readAgent(node, addresses[0]?.value, issues);
  const kubeletReader = node.optionalMapping('kubelet', ['credentials'], '{credentials: bootstrap}') ?? MappingReader.empty(node.pathOf('kubelet'), issues);
  const credentials = readChoice(kubeletReader, 'credentials', KUBELET_CREDENTIALS, kubeletDefault, 'kubelet credentials mode', issues);
  const ssh = readNodeSsh(node, clusterSsh, addresses[0]?.value, sshContext, issues);

  const valid =
    issues.items.length === issueCount &&
    name !== undefined &&
    agent !== undefined &&
    credentials !== undefined &&
    ssh !== undefined;
  const spec: NodeSpec | undefined = valid
    ? {
        name,
        addresses: addresses.map((address) => address.value),
        hostnames: hostnames.map((hostname) => hostname.value),
        roles,
        agent: { endpoint: agent.endpoint, host: agent.host, port: agent.port, prefix: agent.prefix },
        ssh: ssh!,
        kubelet: { credentials: credentials! },
      }
    : undefined;
  return { path, name, addresses, hostnames, roles, agent, spec };
}

/** Reads the node name, a DNS-1123 subdomain because it goes into certificate CNs and SANs. */
function readNodeName(node: MappingReader, issues: IssueList): string | undefined {
  const name = node.requiredString('name', 'etcd-1');
  if (name === undefined || isDnsSubdomain(name)) {
    return name;
  }
  const suggestion = suggestDnsName(name, isDnsSubdomain);
  issues.add(
    node.pathOf('name'),
    `node name "${name}" is not a DNS-1123 subdomain`,
    suggestion === undefined ? `${DNS_NAME_RULES}, such as etcd-1` : `write name: ${suggestion}`,
  );
  return undefined;
}

/** Reads the addresses of a node and returns the valid ones, normalised, without repeats. */
function readAddresses(node: MappingReader, label: string, issues: IssueList): Located<string>[] {
  const list = node.requiredList('addresses', '[192.0.2.11]');
  if (list === undefined) {
    return [];
  }
  if (list.length === 0) {
    issues.add(node.pathOf('addresses'), `${label} has no addresses`, 'add at least one IP address, such as addresses: [192.0.2.11]');
    return [];
  }

  const addresses: Located<string>[] = [];
  list.forEach((value, index) => {
    const path = indexPath(node.pathOf('addresses'), index);
    const address = readAddress(value, path, issues);
    if (address === undefined) {
      return;
    }
    const first = addresses.find((seen) => seen.value === address);
    if (first !== undefined) {
      issues.add(path, `address ${address} is listed twice for ${label}, first at ${first.path}`, `remove the second ${address}`);
      return;
    }
    addresses.push({ value: address, path });
  });
  return addresses;
}

/** Checks one node address and returns it normalised. */
function readAddress(value: unknown, path: string, issues: IssueList): string | undefined {
  if (typeof value !== 'string') {
    issues.add(path, `expected an IP address, found ${describeValue(value)}`, ADDRESS_FIX);
    return undefined;
  }

  const ip = parseIP(value);
  if (ip === undefined) {
    const zone = value.indexOf('%');
    if (zone >= 0 && ipFamily(value.slice(0, zone)) === 6) {
      issues.add(
        path,
        `IP address "${value}" has a zone index, which a certificate cannot contain`,
        `write the address without "${value.slice(zone)}"`,
      );
    } else {
      issues.add(path, `invalid IP address "${value}"`, ADDRESS_FIX);
    }
    return undefined;
  }

  if (isUnspecifiedIP(ip)) {
    issues.add(path, `address "${value}" is the unspecified address, which no node has`, ADDRESS_FIX);
    return undefined;
  }
  return formatIP(ip);
}

function readHostnames(node: MappingReader, label: string, issues: IssueList): Located<string>[] {
  const list = node.optionalList('hostnames', '[etcd-1.demo.example]');
  if (list === undefined) {
    return [];
  }

  const hostnames: Located<string>[] = [];
  list.forEach((value, index) => {
    const path = indexPath(node.pathOf('hostnames'), index);
    if (typeof value !== 'string') {
      issues.add(path, `expected a hostname, found ${describeValue(value)}`, 'write a DNS name such as etcd-1.demo.example');
      return;
    }
    if (!isDnsName(value)) {
      const suggestion = suggestDnsName(value, isDnsName);
      issues.add(
        path,
        `invalid hostname "${value}"`,
        suggestion === undefined ? `${DNS_NAME_RULES}, such as etcd-1.demo.example` : `write ${suggestion}`,
      );
      return;
    }
    const first = hostnames.find((seen) => seen.value === value);
    if (first !== undefined) {
      issues.add(path, `hostname ${value} is listed twice for ${label}, first at ${first.path}`, `remove the second ${value}`);
      return;
    }
    hostnames.push({ value, path });
  });
  return hostnames;
}

/** Reads the roles of a node in input order, without unknown or repeated ones. */
function readRoles(node: MappingReader, label: string, issues: IssueList): Role[] {
  const list = node.requiredList('roles', '[etcd]');
  if (list === undefined) {
    return [];
  }
  if (list.length === 0) {
    issues.add(
      node.pathOf('roles'),
      `${label} has no roles`,
      `add at least one of ${ROLES.join(', ')}, such as roles: [worker]`,
    );
    return [];
  }

  const roles: Role[] = [];
  list.forEach((value, index) => {
    const path = indexPath(node.pathOf('roles'), index);
    if (typeof value !== 'string') {
      issues.add(path, `expected a role, found ${describeValue(value)}`, `write one of ${ROLES.join(', ')}`);
      return;
    }
    const role = ROLES.find((candidate) => candidate === value);
    if (role === undefined) {
      const similar = findSimilarName(value, ROLES);
      issues.add(
        path,
        `unknown role "${value}"`,
        similar === undefined ? `write one of ${ROLES.join(', ')}` : `write ${similar}`,
      );
      return;
    }
    if (roles.includes(role)) {
      issues.add(path, `role "${role}" is listed twice for ${label}`, `remove the second "${role}"`);
      return;
    }
    roles.push(role);
  });
  return roles;
}

/**
 * Reads `agent.prefix` and `agent.endpoint`, or builds the default endpoint `<first address>:7443`
 * when it is not set.
 * Returns undefined after an issue, or when there is no valid address to build the default
 * from, which `readAddresses` has already reported.
 */
function readAgent(node: MappingReader, firstAddress: string | undefined, issues: IssueList): LocatedAgent | undefined {
  const agent = node.optionalMapping('agent', ['endpoint', 'prefix'], `{endpoint: "192.0.2.11:${DEFAULT_AGENT_PORT}"}`);
  if (agent === undefined) {
    return undefined;
  }
  const prefix = readAgentPrefix(agent, issues);
  if (prefix === undefined) {
    return undefined;
  }

  const path = agent.pathOf('endpoint');
  if (!agent.has('endpoint')) {
    if (firstAddress === undefined) {
      return undefined;
    }
    const endpoint = joinHostPort(firstAddress, DEFAULT_AGENT_PORT);
    return { endpoint, host: firstAddress, port: DEFAULT_AGENT_PORT, prefix, path, defaulted: true };
  }

  const text = agent.requiredString('endpoint', `"192.0.2.11:${DEFAULT_AGENT_PORT}"`);
  if (text === undefined) {
    return undefined;
  }
  const parsed = parseAgentEndpoint(text, path, issues);
  return parsed === undefined ? undefined : { endpoint: text, ...parsed, prefix, path, defaulted: false };
}

/** Parses `host:port` or `[ipv6]:port`. The port is required. */
function parseAgentEndpoint(
  text: string,
  path: string,
  issues: IssueList,
): { readonly host: string; readonly port: number } | undefined {
  const parts = splitHostPort(text);
  if (parts === undefined) {
    const fix =
      ipFamily(text) === 6
        ? `put the IPv6 address in brackets and add the port: [${text}]:${DEFAULT_AGENT_PORT}`
        : `write host:port, such as 192.0.2.11:${DEFAULT_AGENT_PORT}`;
    issues.add(path, `invalid agent endpoint "${text}"`, fix);
    return undefined;
  }

  const host = parseHost(parts.host, parts.bracketed);
  if (host === undefined) {
    const message =
      parts.host === '' ? `agent endpoint "${text}" has no host` : `invalid host "${parts.host}" in agent endpoint "${text}"`;
    issues.add(path, message, AGENT_HOST_FIX);
    return undefined;
  }
  if (parts.port === undefined) {
    issues.add(
      path,
      `agent endpoint "${text}" has no port`,
      `add the port after a colon, such as ${joinHostPort(host.host, DEFAULT_AGENT_PORT)}`,
    );
    return undefined;
  }
  const port = parsePort(parts.port);
  if (port === undefined) {
    issues.add(
      path,
      `invalid port "${parts.port}" in agent endpoint "${text}"`,
      `write a port from 1 to 65535, such as ${joinHostPort(host.host, DEFAULT_AGENT_PORT)}`,
    );
    return undefined;
  }
  return { host: host.host, port };
}

function checkUniqueNames(drafts: readonly NodeDraft[], issues: IssueList): void {
  const firstPaths = new Map<string, string>();
  for (const draft of drafts) {
    if (draft.name === undefined) {
      continue;
    }
    const firstPath = firstPaths.get(draft.name);
    if (firstPath === undefined) {
      firstPaths.set(draft.name, draft.path);
      continue;
    }
    issues.add(
      `${draft.path}.name`,
      `duplicate node name "${draft.name}", already used by ${firstPath}`,
      `rename one of the two nodes, because each node name must be unique`,
    );
  }
}

/** Reports a value, such as an address or hostname, that two nodes share. */
function checkUniqueValues(
  drafts: readonly NodeDraft[],
  valuesOf: (draft: NodeDraft) => readonly Located<string>[],
  description: string,
  plural: string,
  issues: IssueList,
): void {
  const owners = new Map<string, { readonly draft: NodeDraft; readonly path: string }>();
  for (const draft of drafts) {
    for (const { value, path } of valuesOf(draft)) {
      const owner = owners.get(value);
      if (owner === undefined) {
        owners.set(value, { draft, path });
        continue;
      }
      issues.add(
        path,
        `${description} ${value} is also used by ${describeNode(owner.draft)} (${owner.path})`,
        `give each node its own ${plural} and remove ${value} from one of the two nodes`,
      );
    }
  }
}

function checkUniqueAgentEndpoints(drafts: readonly NodeDraft[], issues: IssueList): void {
  const owners = new Map<string, { readonly draft: NodeDraft; readonly agent: LocatedAgent }>();
  for (const draft of drafts) {
    const agent = draft.agent;
    if (agent === undefined) {
      continue;
    }
    const key = joinHostPort(agent.host, agent.port);
    const owner = owners.get(key);
    if (owner === undefined) {
      owners.set(key, { draft, agent });
      continue;
    }
    // Two default endpoints only clash when two nodes share an address, which is reported already.
    if (agent.defaulted && owner.agent.defaulted) {
      continue;
    }
    const source = agent.defaulted ? ' (the default, from the first address)' : '';
    issues.add(
      agent.path,
      `agent endpoint ${agent.endpoint}${source} is also used by ${describeNode(owner.draft)} (${owner.agent.path})`,
      'give each node its own agent endpoint, for example by changing the port of one of them',
    );
  }
}

/** Reports a missing etcd or master role, and warns about an even number of etcd members. */
function checkRoleCounts(drafts: readonly NodeDraft[], path: string, issues: IssueList, warnings: IssueList): void {
  const count = (role: Role): number => drafts.filter((draft) => draft.roles.includes(role)).length;

  if (count('master') === 0) {
    issues.add(path, 'no node has the role master', 'add master to the roles of at least one node, such as roles: [master]');
  }

  const etcdMembers = count('etcd');
  if (etcdMembers === 0) {
    issues.add(path, 'no node has the role etcd', 'add etcd to the roles of at least one node, such as roles: [etcd]');
  } else if (etcdMembers % 2 === 0) {
    // A cluster of n members needs a majority to work, so it tolerates floor((n - 1) / 2) failed members.
    const tolerated = Math.floor((etcdMembers - 1) / 2);
    warnings.add(
      path,
      `${etcdMembers} nodes have the role etcd, but an even count adds no fault tolerance over one fewer member ` +
        `(${etcdMembers} members tolerate ${tolerated} failed, as ${etcdMembers - 1} do)`,
      `use an odd number of etcd members, such as ${etcdMembers - 1} or ${etcdMembers + 1}`,
    );
  }
}

function describeNode(draft: NodeDraft): string {
  return draft.name === undefined ? `the node at ${draft.path}` : `node "${draft.name}"`;
}
