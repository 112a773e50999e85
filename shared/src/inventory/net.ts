/**
 * IP address, CIDR, DNS name and host:port helpers for the inventory. They only parse and
 * normalise. The inventory parser turns their results into issues with messages and fixes.
 */
import { isIP } from 'node:net';

export type IpFamily = 4 | 6;

/** An IP address as bytes: 4 for IPv4, 16 for IPv6. */
export interface IpBytes {
  readonly family: IpFamily;
  readonly bytes: readonly number[];
}

/**
 * Parses an IPv4 or IPv6 address. Returns undefined for anything else, including IPv6
 * addresses with a zone index such as `fe80::1%eth0`, which cannot appear in a certificate.
 */
export function parseIP(text: string): IpBytes | undefined {
  const family = isIP(text);
  if (family === 4) {
    return { family: 4, bytes: ipv4Bytes(text) };
  }
  if (family === 6 && !text.includes('%')) {
    return { family: 6, bytes: ipv6Bytes(text) };
  }
  return undefined;
}

/** Returns the IP family of `text`, or undefined when it is not a plain IP address. */
export function ipFamily(text: string): IpFamily | undefined {
  return parseIP(text)?.family;
}

/**
 * Normalises an IP address: IPv6 in the RFC 5952 form (lowercase, leading zeros dropped,
 * the longest run of zero groups compressed). Returns undefined for an invalid address.
 */
export function normalizeIP(text: string): string | undefined {
  const ip = parseIP(text);
  return ip === undefined ? undefined : formatIP(ip);
}

/** Formats address bytes as text, IPv6 in the RFC 5952 form. */
export function formatIP(ip: IpBytes): string {
  if (ip.family === 4) {
    return ip.bytes.join('.');
  }

  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) {
    groups.push((ip.bytes[i]! << 8) | ip.bytes[i + 1]!);
  }

  // RFC 5952 section 5: IPv4-mapped addresses keep the dotted IPv4 tail.
  if (groups.slice(0, 5).every((group) => group === 0) && groups[5] === 0xffff) {
    return `::ffff:${ip.bytes.slice(12).join('.')}`;
  }

  // Compress the longest run of two or more zero groups, the first one on a tie.
  let bestStart = -1;
  let bestLength = 1;
  for (let start = 0; start < 8; start++) {
    let length = 0;
    while (start + length < 8 && groups[start + length] === 0) {
      length++;
    }
    if (length > bestLength) {
      bestStart = start;
      bestLength = length;
    }
  }

  const hex = groups.map((group) => group.toString(16));
  if (bestStart < 0) {
    return hex.join(':');
  }
  const head = hex.slice(0, bestStart).join(':');
  const tail = hex.slice(bestStart + bestLength).join(':');
  return `${head}::${tail}`;
}

/** Reports whether the address is 0.0.0.0 or ::, which no node can be reached at. */
export function isUnspecifiedIP(ip: IpBytes): boolean {
  return ip.bytes.every((byte) => byte === 0);
}

function ipv4Bytes(text: string): number[] {
  return text.split('.').map((part) => Number.parseInt(part, 10));
}

/** Expands an IPv6 address that `isIP` accepted into 16 bytes. */
function ipv6Bytes(text: string): number[] {
  let hexText = text;

  // Rewrite a dotted IPv4 tail such as ::ffff:192.0.2.1 as two hexadecimal groups.
  const lastColon = hexText.lastIndexOf(':');
  const tail = hexText.slice(lastColon + 1);
  if (tail.includes('.')) {
    const [a, b, c, d] = ipv4Bytes(tail) as [number, number, number, number];
    const high = ((a << 8) | b).toString(16);
    const low = ((c << 8) | d).toString(16);
    hexText = `${hexText.slice(0, lastColon + 1)}${high}:${low}`;
  }

  const [left = '', right] = hexText.split('::');
  const leftGroups = left === '' ? [] : left.split(':');
  const rightGroups = right === undefined || right === '' ? [] : right.split(':');
  const zeroGroups: string[] = Array<string>(8 - leftGroups.length - rightGroups.length).fill('0');
  const groups = right === undefined ? leftGroups : [...leftGroups, ...zeroGroups, ...rightGroups];

  const bytes: number[] = [];
  for (const group of groups) {
    const value = Number.parseInt(group, 16);
    bytes.push(value >> 8, value & 0xff);
  }
  return bytes;
}

/** A parsed CIDR. `text` is its normalised form, such as `fd00:10:96::/112`. */
export interface Cidr {
  readonly network: IpBytes;
  readonly prefixLength: number;
  readonly text: string;
}

/** The result of `parseCidr`: the CIDR, or the first problem found in it. */
export type CidrResult =
  | { readonly ok: true; readonly cidr: Cidr }
  | { readonly ok: false; readonly problem: 'missing-prefix' }
  | { readonly ok: false; readonly problem: 'invalid-address'; readonly address: string }
  | {
      readonly ok: false;
      readonly problem: 'invalid-prefix';
      readonly family: IpFamily;
      readonly prefix: string;
      readonly maxPrefixLength: number;
    }
  /** The address has bits set after the prefix. `network` is the CIDR with those bits cleared. */
  | { readonly ok: false; readonly problem: 'host-bits-set'; readonly network: string };

/** Parses `address/prefix-length`. The address must be the network address of the range. */
export function parseCidr(text: string): CidrResult {
  const slash = text.indexOf('/');
  if (slash < 0) {
    return { ok: false, problem: 'missing-prefix' };
  }

  const address = text.slice(0, slash);
  const prefix = text.slice(slash + 1);
  const ip = parseIP(address);
  if (ip === undefined) {
    return { ok: false, problem: 'invalid-address', address };
  }

  const maxPrefixLength = ip.bytes.length * 8;
  const prefixLength = parsePrefixLength(prefix, maxPrefixLength);
  if (prefixLength === undefined) {
    return { ok: false, problem: 'invalid-prefix', family: ip.family, prefix, maxPrefixLength };
  }

  const network: IpBytes = { family: ip.family, bytes: maskBytes(ip.bytes, prefixLength) };
  const normalized = `${formatIP(network)}/${prefixLength}`;
  if (network.bytes.some((byte, i) => byte !== ip.bytes[i])) {
    return { ok: false, problem: 'host-bits-set', network: normalized };
  }
  return { ok: true, cidr: { network, prefixLength, text: normalized } };
}

function parsePrefixLength(text: string, maxPrefixLength: number): number | undefined {
  if (!/^[0-9]{1,3}$/.test(text)) {
    return undefined;
  }
  const prefixLength = Number.parseInt(text, 10);
  return prefixLength <= maxPrefixLength ? prefixLength : undefined;
}

function maskBytes(bytes: readonly number[], prefixLength: number): number[] {
  return bytes.map((byte, i) => {
    const bitsInByte = Math.min(8, Math.max(0, prefixLength - i * 8));
    return byte & ((0xff << (8 - bitsInByte)) & 0xff);
  });
}

/** Reports whether the CIDR contains an address after its network address. */
export function hasFirstAddress(cidr: Cidr): boolean {
  return cidr.prefixLength < cidr.network.bytes.length * 8;
}

/**
 * Returns the address after the network address of a CIDR, which Kubernetes gives to the
 * `kubernetes` service: 10.96.0.0/12 gives 10.96.0.1 and fd00:10:96::/112 gives fd00:10:96::1.
 * Host bits in the input are cleared first. Throws when the CIDR is invalid or is a single
 * address (/32 for IPv4, /128 for IPv6).
 */
export function firstAddressOfCidr(cidr: string): string {
  const slash = cidr.indexOf('/');
  const ip = slash < 0 ? undefined : parseIP(cidr.slice(0, slash));
  const maxPrefixLength = ip === undefined ? 0 : ip.bytes.length * 8;
  const prefixLength = parsePrefixLength(cidr.slice(slash + 1), maxPrefixLength);
  if (ip === undefined || prefixLength === undefined) {
    throw new Error(`invalid CIDR "${cidr}"`);
  }
  if (prefixLength === maxPrefixLength) {
    throw new Error(`CIDR "${cidr}" is a single address and has no address after its network address`);
  }

  const bytes = maskBytes(ip.bytes, prefixLength);
  // Add 1 to the network address, carrying into higher bytes. The carry never leaves the
  // host part because that part has at least one bit and is all zeros.
  for (let i = bytes.length - 1; i >= 0; i--) {
    bytes[i] = (bytes[i]! + 1) & 0xff;
    if (bytes[i] !== 0) {
      break;
    }
  }
  return formatIP({ family: ip.family, bytes });
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** Reports whether `text` is a DNS-1123 label: 1 to 63 lowercase letters, digits and `-`, alphanumeric at both ends. */
export function isDnsLabel(text: string): boolean {
  return text.length <= 63 && DNS_LABEL.test(text);
}

/** Reports whether `text` is a DNS-1123 subdomain: at most 253 characters of dot-separated DNS-1123 labels. */
export function isDnsSubdomain(text: string): boolean {
  return text.length <= 253 && text.split('.').every(isDnsLabel);
}

/**
 * Reports whether `text` is a lowercase DNS name that can be a certificate SAN: a DNS-1123
 * subdomain whose last label is not all digits. RFC 1123 section 2.1 requires the top-level
 * label to be alphabetic, and the rule keeps a mistyped IPv4 address such as 192.0.2.300
 * from passing as a name.
 */
export function isDnsName(text: string): boolean {
  const lastLabel = text.slice(text.lastIndexOf('.') + 1);
  return isDnsSubdomain(text) && !/^[0-9]+$/.test(lastLabel);
}

/** The rules of `isDnsName` in words, for the fix of an issue. */
export const DNS_NAME_RULES =
  'use lowercase letters, digits, "-" and "." with labels of 1 to 63 characters that start and end with a letter or digit';

/** Reports whether `text` is a DNS name or a wildcard name such as `*.demo.example`. */
export function isDnsNameOrWildcard(text: string): boolean {
  return isDnsName(text.startsWith('*.') ? text.slice(2) : text);
}

/** A host and optional port split from `host:port`, `[ipv6]:port`, `host` or `[ipv6]`. */
export interface HostPortText {
  /** Host without brackets. */
  readonly host: string;
  readonly bracketed: boolean;
  /** Text after the colon, or undefined when there is no colon. */
  readonly port: string | undefined;
}

/**
 * Splits a host and optional port. Returns undefined when the text cannot be split, such as
 * an unbracketed IPv6 address or text after the closing bracket that is not `:port`.
 */
export function splitHostPort(text: string): HostPortText | undefined {
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0) {
      return undefined;
    }
    const rest = text.slice(close + 1);
    if (rest !== '' && !rest.startsWith(':')) {
      return undefined;
    }
    const port = rest === '' ? undefined : rest.slice(1);
    return { host: text.slice(1, close), bracketed: true, port };
  }

  const colons = text.split(':').length - 1;
  if (colons === 0) {
    return { host: text, bracketed: false, port: undefined };
  }
  if (colons > 1) {
    return undefined;
  }
  const colon = text.indexOf(':');
  return { host: text.slice(0, colon), bracketed: false, port: text.slice(colon + 1) };
}

/** Parses a decimal TCP port from 1 to 65535. Returns undefined for anything else. */
export function parsePort(text: string): number | undefined {
  if (!/^[0-9]{1,5}$/.test(text)) {
    return undefined;
  }
  const port = Number.parseInt(text, 10);
  return port >= 1 && port <= 65535 ? port : undefined;
}

/** Joins a host and port, putting an IPv6 address in brackets. */
export function joinHostPort(host: string, port: number): string {
  return ipFamily(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

/** A host that is an IP address (normalised) or a lowercase DNS name. */
export interface Host {
  readonly host: string;
  readonly isIP: boolean;
  readonly ip: IpBytes | undefined;
}

/**
 * Parses the host of a URL or `host:port`, given without brackets. A host that was written in
 * brackets must be an IPv6 address. Otherwise it must be an IPv4 address or a DNS name.
 * Returns undefined for anything else.
 */
export function parseHost(text: string, bracketed: boolean): Host | undefined {
  const ip = parseIP(text);
  if (bracketed) {
    return ip?.family === 6 ? { host: formatIP(ip), isIP: true, ip } : undefined;
  }
  if (ip?.family === 4) {
    return { host: formatIP(ip), isIP: true, ip };
  }
  return isDnsName(text) ? { host: text, isIP: false, ip: undefined } : undefined;
}

/**
 * Suggests a valid spelling of a mistyped DNS name for a fix: lowercase, with runs of other
 * characters replaced by `-` and a trailing dot removed. Returns undefined when the result
 * still fails `isValid` or equals the input.
 */
export function suggestDnsName(text: string, isValid: (candidate: string) => boolean): string | undefined {
  const candidate = text
    .trim()
    .toLowerCase()
    .replace(/\.$/, '')
    .replace(/[^a-z0-9.*]+/g, '-')
    .replace(/(^|\.)-+/g, '$1')
    .replace(/-+(\.|$)/g, '$1');
  return candidate !== text && isValid(candidate) ? candidate : undefined;
}
