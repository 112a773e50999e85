// DER encoding and decoding shared by certificates and certification requests. A parsed element
// keeps its own bytes, so the DER of a parsed part (a signed TBSCertificate, an issuer name) is
// exactly the bytes that were read.
import * as crypto from 'node:crypto';
import * as net from 'node:net';

/** The class bits of a tag octet. */
const Class = { UNIVERSAL: 0x00, CONTEXT_SPECIFIC: 0x80 } as const;

/** Universal tag numbers (X.680, section 8.4) that certificates and requests use. */
const Type = {
  BOOLEAN: 1,
  INTEGER: 2,
  BITSTRING: 3,
  OCTETSTRING: 4,
  NULL: 5,
  OID: 6,
  UTF8: 12,
  SEQUENCE: 16,
  SET: 17,
  NUMERIC_STRING: 18,
  PRINTABLESTRING: 19,
  TELETEX_STRING: 20,
  IA5STRING: 22,
  UTCTIME: 23,
  GENERALIZEDTIME: 24,
  BMPSTRING: 30,
} as const;

/** The constructed bit of a tag octet. */
const CONSTRUCTED = 0x20;

/** Elements nest deeper than this only in hostile input: a certificate needs about 8 levels. */
const MAX_DEPTH = 64;

/** One DER element: a primitive with its contents octets, or a constructed element with its elements. */
export interface Asn1 {
  /** Class bits of the tag octet: 0x00 universal, 0x40 application, 0x80 context-specific, 0xc0 private. */
  readonly tagClass: number;
  /** Tag number, 0 to 30. */
  readonly type: number;
  readonly constructed: boolean;
  /** Contents octets of a primitive element, or the elements of a constructed one. */
  readonly value: Buffer | readonly Asn1[];
  /** The input that parseDer read the element from, undefined for a built element. toDer returns the bytes from sourceStart to sourceEnd. */
  readonly source: Buffer | undefined;
  readonly sourceStart: number;
  readonly sourceEnd: number;
}

export const OID = {
  commonName: '2.5.4.3',
  organizationName: '2.5.4.10',
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
  extensionRequest: '1.2.840.113549.1.9.14',
  sha256WithRSAEncryption: '1.2.840.113549.1.1.11',
  sha384WithRSAEncryption: '1.2.840.113549.1.1.12',
  sha512WithRSAEncryption: '1.2.840.113549.1.1.13',
  ecdsaWithSHA256: '1.2.840.10045.4.3.2',
  ecdsaWithSHA384: '1.2.840.10045.4.3.3',
  ecdsaWithSHA512: '1.2.840.10045.4.3.4',
} as const;

function isElementList(value: Buffer | readonly Asn1[]): value is readonly Asn1[] {
  return !Buffer.isBuffer(value);
}

// ---------------------------------------------------------------------------------------------
// Encoding and decoding whole structures

/** Encodes an element. A parsed element gives back the bytes it was read from. */
export function toDer(node: Asn1): Buffer {
  if (node.source !== undefined) {
    return node.source.subarray(node.sourceStart, node.sourceEnd);
  }
  // Two passes over the tree: the first records the contents length of each element in pre-order,
  // the second writes tags, lengths and contents into one buffer.
  const lengths: number[] = [];
  const output = Buffer.allocUnsafe(measure(node, lengths));
  const cursor: WriteCursor = { output, offset: 0, index: 0 };
  write(node, cursor, lengths);
  return output;
}

interface WriteCursor {
  readonly output: Buffer;
  offset: number;
  index: number;
}

/** Returns the encoded length of `node` and appends the contents length of it and of each element below it. */
function measure(node: Asn1, lengths: number[]): number {
  if (node.source !== undefined) {
    return node.sourceEnd - node.sourceStart;
  }
  const slot = lengths.length;
  lengths.push(0);
  let contentsLength = 0;
  if (isElementList(node.value)) {
    for (const child of node.value) contentsLength += measure(child, lengths);
  } else {
    contentsLength = node.value.length;
  }
  lengths[slot] = contentsLength;
  return 1 + lengthOctets(contentsLength) + contentsLength;
}

function write(node: Asn1, cursor: WriteCursor, lengths: readonly number[]): void {
  const { output } = cursor;
  if (node.source !== undefined) {
    output.set(node.source.subarray(node.sourceStart, node.sourceEnd), cursor.offset);
    cursor.offset += node.sourceEnd - node.sourceStart;
    return;
  }
  const contentsLength = lengths[cursor.index++]!;
  output[cursor.offset] = node.tagClass | (node.constructed ? CONSTRUCTED : 0) | node.type;
  cursor.offset = writeLength(output, cursor.offset + 1, contentsLength);
  if (isElementList(node.value)) {
    for (const child of node.value) write(child, cursor, lengths);
  } else {
    output.set(node.value, cursor.offset);
    cursor.offset += node.value.length;
  }
}

/** Counts the length octets that DER uses for contents of `length` octets. */
function lengthOctets(length: number): number {
  let count = 1;
  if (length > 0x7f) {
    for (let rest = length; rest > 0; rest = Math.floor(rest / 256)) count += 1;
  }
  return count;
}

/**
 * Writes the length octets of `length` at `offset` as DER requires: one octet up to 127, otherwise
 * a count octet and the fewest octets after it. Returns the offset after them.
 */
function writeLength(output: Buffer, offset: number, length: number): number {
  if (length <= 0x7f) {
    output[offset] = length;
    return offset + 1;
  }
  const count = lengthOctets(length) - 1;
  let position = offset;
  output[position++] = 0x80 | count;
  for (let shift = (count - 1) * 8; shift >= 0; shift -= 8) {
    output[position++] = Math.floor(length / 2 ** shift) & 0xff;
  }
  return position;
}

/**
 * Parses one DER element that fills `der`. Accepts only definite lengths in the fewest octets and
 * one-octet tags. Primitive contents are views into `der`.
 */
export function parseDer(der: Buffer, context: string): Asn1 {
  try {
    const { node, end } = readElement(der, 0, der.length, 0);
    if (end !== der.length) {
      throw new Error(`${der.length - end} extra octets after the element`);
    }
    return node;
  } catch (err) {
    throw new Error(`${context} is not valid DER: ${errorMessage(err)}`, { cause: err });
  }
}

/** Reads the element at `offset` and, for a constructed one, every element inside it. */
function readElement(der: Buffer, offset: number, limit: number, depth: number): { node: Asn1; end: number } {
  const element = derElementAt(der, offset, limit);
  if (typeof element === 'string') {
    throw new Error(element);
  }
  const constructed = (element.tag & CONSTRUCTED) !== 0;
  let value: Buffer | Asn1[];
  if (constructed) {
    if (depth >= MAX_DEPTH) {
      throw new Error(`elements nest deeper than ${MAX_DEPTH} levels`);
    }
    const children: Asn1[] = [];
    let position = element.start;
    while (position < element.end) {
      const child = readElement(der, position, element.end, depth + 1);
      children.push(child.node);
      position = child.end;
    }
    value = children;
  } else {
    value = der.subarray(element.start, element.end);
  }
  const node: Asn1 = { tagClass: element.tag & 0xc0, type: element.tag & 0x1f, constructed, value, source: der, sourceStart: offset, sourceEnd: element.end };
  return { node, end: element.end };
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

// ---------------------------------------------------------------------------------------------
// Building nodes

/** Builds an element with the same fields as a parsed one, so that V8 keeps one object shape for both. */
function element(tagClass: number, type: number, constructed: boolean, value: Buffer | readonly Asn1[]): Asn1 {
  return { tagClass, type, constructed, value, source: undefined, sourceStart: 0, sourceEnd: 0 };
}

function primitive(tagClass: number, type: number, contents: Buffer): Asn1 {
  return element(tagClass, type, false, contents);
}

export function sequence(children: readonly Asn1[]): Asn1 {
  return element(Class.UNIVERSAL, Type.SEQUENCE, true, children);
}

export function setOf(children: readonly Asn1[]): Asn1 {
  return element(Class.UNIVERSAL, Type.SET, true, children);
}

/** The DER contents of each OID encoded so far. A certificate repeats the same dozen OIDs. */
const oidContents = new Map<string, Buffer>();

export function objectIdentifier(oid: string): Asn1 {
  let contents = oidContents.get(oid);
  if (contents === undefined) {
    contents = encodeOid(oid);
    if (oidContents.size < 256) oidContents.set(oid, contents);
  }
  return primitive(Class.UNIVERSAL, Type.OID, contents);
}

/** Encodes dotted-decimal OID text as contents octets: the first two arcs in one subidentifier, each in base 128. */
function encodeOid(oid: string): Buffer {
  const arcs = oid.split('.').map((arc) => (/^\d+$/.test(arc) ? BigInt(arc) : -1n));
  const [first = -1n, second = -1n] = arcs;
  if (arcs.length < 2 || arcs.some((arc) => arc < 0n) || first > 2n || (first < 2n && second >= 40n)) {
    throw new Error(`invalid OBJECT IDENTIFIER "${oid}"`);
  }
  const octets: number[] = [];
  for (const subidentifier of [first * 40n + second, ...arcs.slice(2)]) {
    const groups = [Number(subidentifier & 0x7fn)];
    for (let rest = subidentifier >> 7n; rest > 0n; rest >>= 7n) {
      groups.unshift(Number(rest & 0x7fn) | 0x80);
    }
    octets.push(...groups);
  }
  return Buffer.from(octets);
}

/** Decodes OID contents octets to dotted-decimal text, and rejects subidentifiers that DER would encode shorter. */
function decodeOid(bytes: Buffer, context: string): string {
  const subidentifiers: Array<number | bigint> = [];
  // A subidentifier stays a number while it is exact and becomes a bigint beyond that.
  let value: number | bigint = 0;
  let started = false;
  for (const byte of bytes) {
    if (!started && byte === 0x80) {
      throw new Error(`${context}: OBJECT IDENTIFIER subidentifier is not in the fewest octets`);
    }
    started = true;
    if (typeof value === 'number' && value < 2 ** 45) {
      value = value * 128 + (byte & 0x7f);
    } else {
      value = (BigInt(value) << 7n) | BigInt(byte & 0x7f);
    }
    if ((byte & 0x80) === 0) {
      subidentifiers.push(value);
      value = 0;
      started = false;
    }
  }
  const [head] = subidentifiers;
  if (head === undefined || started) {
    throw new Error(`${context}: truncated OBJECT IDENTIFIER`);
  }
  let first = 2;
  if (head < 40) first = 0;
  else if (head < 80) first = 1;
  const second = typeof head === 'number' ? head - first * 40 : head - BigInt(first * 40);
  return [first, second, ...subidentifiers.slice(1)].join('.');
}

/** Encodes a non-negative INTEGER in the minimal number of octets. */
export function integer(value: bigint): Asn1 {
  if (value < 0n) {
    throw new RangeError(`negative INTEGER ${value} is not supported`);
  }
  let hex = value.toString(16);
  if (hex.length % 2 === 1) {
    hex = `0${hex}`;
  }
  // A set top bit would read as a negative two's complement value, so one zero octet goes first.
  if (Number.parseInt(hex.slice(0, 2), 16) >= 0x80) {
    hex = `00${hex}`;
  }
  return primitive(Class.UNIVERSAL, Type.INTEGER, Buffer.from(hex, 'hex'));
}

export function booleanTrue(): Asn1 {
  return primitive(Class.UNIVERSAL, Type.BOOLEAN, Buffer.from([0xff]));
}

export function nullValue(): Asn1 {
  return primitive(Class.UNIVERSAL, Type.NULL, Buffer.alloc(0));
}

export function utf8String(text: string): Asn1 {
  return primitive(Class.UNIVERSAL, Type.UTF8, Buffer.from(text, 'utf8'));
}

export function octetString(bytes: Buffer): Asn1 {
  return primitive(Class.UNIVERSAL, Type.OCTETSTRING, bytes);
}

export function bitString(bytes: Buffer, unusedBits = 0): Asn1 {
  return primitive(Class.UNIVERSAL, Type.BITSTRING, Buffer.concat([Buffer.from([unusedBits]), bytes]));
}

/** Builds a constructed context-specific node: an EXPLICIT tag, or an IMPLICIT tag on a SEQUENCE or SET. */
export function contextConstructed(tagNumber: number, children: readonly Asn1[]): Asn1 {
  return element(Class.CONTEXT_SPECIFIC, tagNumber, true, children);
}

/** Builds a primitive context-specific node, as an IMPLICIT tag on a string type gives. */
export function contextPrimitive(tagNumber: number, bytes: Buffer): Asn1 {
  return primitive(Class.CONTEXT_SPECIFIC, tagNumber, bytes);
}

// ---------------------------------------------------------------------------------------------
// Reading nodes. `context` names the position in the structure for error messages.

export function childrenOf(node: Asn1, context: string): readonly Asn1[] {
  if (!isElementList(node.value)) {
    throw new Error(`${context}: expected a constructed value`);
  }
  return node.value;
}

export function childAt(node: Asn1, index: number, context: string): Asn1 {
  const child = childrenOf(node, context)[index];
  if (child === undefined) {
    throw new Error(`${context}: missing element ${index}`);
  }
  return child;
}

export function isContextTag(node: Asn1 | undefined, tagNumber: number): node is Asn1 {
  return node !== undefined && node.tagClass === Class.CONTEXT_SPECIFIC && node.type === tagNumber;
}

export function expectUniversal(node: Asn1, type: number, typeName: string, context: string): void {
  if (node.tagClass !== Class.UNIVERSAL || node.type !== type) {
    throw new Error(`${context}: expected ${typeName}, got tag class ${node.tagClass} number ${node.type}`);
  }
}

/** Returns the contents octets of a primitive element. For a parsed element they are a view into its DER, so never change them. */
export function primitiveBytes(node: Asn1, context: string): Buffer {
  if (isElementList(node.value)) {
    throw new Error(`${context}: expected a primitive value`);
  }
  return node.value;
}

export function readOid(node: Asn1, context: string): string {
  expectUniversal(node, Type.OID, 'OBJECT IDENTIFIER', context);
  return decodeOid(primitiveBytes(node, context), context);
}

/** Decodes a two's complement INTEGER of any size. */
export function readInteger(node: Asn1, context: string): bigint {
  expectUniversal(node, Type.INTEGER, 'INTEGER', context);
  return decodeInteger(primitiveBytes(node, context), context);
}

/** Decodes the contents octets of a two's complement INTEGER. */
export function decodeInteger(bytes: Buffer, context: string): bigint {
  if (bytes.length === 0) {
    throw new Error(`${context}: empty INTEGER`);
  }
  const unsigned = BigInt(`0x${bytes.toString('hex')}`);
  const isNegative = ((bytes[0] ?? 0) & 0x80) !== 0;
  return isNegative ? unsigned - (1n << BigInt(bytes.length * 8)) : unsigned;
}

export function readBoolean(node: Asn1, context: string): boolean {
  expectUniversal(node, Type.BOOLEAN, 'BOOLEAN', context);
  const bytes = primitiveBytes(node, context);
  if (bytes.length !== 1) {
    throw new Error(`${context}: BOOLEAN must be one octet`);
  }
  return bytes[0] !== 0;
}

export function readOctetString(node: Asn1, context: string): Buffer {
  expectUniversal(node, Type.OCTETSTRING, 'OCTET STRING', context);
  return primitiveBytes(node, context);
}

/** Returns the contents of a BIT STRING of whole octets, which keys and signatures use. */
export function readOctetAlignedBitString(node: Asn1, context: string): Buffer {
  expectUniversal(node, Type.BITSTRING, 'BIT STRING', context);
  const bytes = primitiveBytes(node, context);
  if (bytes.length === 0 || bytes[0] !== 0) {
    throw new Error(`${context}: expected a BIT STRING of whole octets`);
  }
  return bytes.subarray(1);
}

const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

/** Decodes the string types that X.509 names use in practice. */
export function readString(node: Asn1, context: string): string {
  if (node.tagClass !== Class.UNIVERSAL || isElementList(node.value)) {
    throw new Error(`${context}: expected a string`);
  }
  switch (node.type as number) {
    case Type.UTF8:
      return utf8Decoder.decode(primitiveBytes(node, context));
    case Type.PRINTABLESTRING:
    case Type.IA5STRING:
    case Type.NUMERIC_STRING:
    case Type.TELETEX_STRING:
      return primitiveBytes(node, context).toString('latin1');
    case Type.BMPSTRING:
      return decodeBmpString(primitiveBytes(node, context), context);
    default:
      throw new Error(`${context}: unsupported string type with tag number ${node.type}`);
  }
}

/** Decodes a BMPString: UCS-2, two octets per character, most significant first. */
function decodeBmpString(bytes: Buffer, context: string): string {
  if (bytes.length % 2 !== 0) {
    throw new Error(`${context}: BMPString of ${bytes.length} octets: expected an even number`);
  }
  return Buffer.from(bytes).swap16().toString('utf16le');
}

// ---------------------------------------------------------------------------------------------
// Time

function pad(value: number, width: number): string {
  return String(value).padStart(width, '0');
}

/** Encodes a Date to whole seconds. RFC 5280 requires UTCTime for 1950 to 2049 and GeneralizedTime otherwise. */
export function encodeTime(date: Date): Asn1 {
  const year = date.getUTCFullYear();
  const rest =
    pad(date.getUTCMonth() + 1, 2) +
    pad(date.getUTCDate(), 2) +
    pad(date.getUTCHours(), 2) +
    pad(date.getUTCMinutes(), 2) +
    pad(date.getUTCSeconds(), 2) +
    'Z';
  if (year >= 1950 && year <= 2049) {
    return primitive(Class.UNIVERSAL, Type.UTCTIME, Buffer.from(pad(year % 100, 2) + rest, 'latin1'));
  }
  return primitive(Class.UNIVERSAL, Type.GENERALIZEDTIME, Buffer.from(pad(year, 4) + rest, 'latin1'));
}

const UTC_TIME = /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/;
const GENERALIZED_TIME = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/;

/** Decodes UTCTime or GeneralizedTime in the DER form that RFC 5280 requires: seconds, "Z", no fraction. */
export function readTime(node: Asn1, context: string): Date {
  const bytes = primitiveBytes(node, context);
  // A universal primitive tag octet is the tag number itself.
  return decodeTime(node.tagClass === Class.UNIVERSAL ? node.type : -1, bytes, context);
}

/** Decodes the contents octets of a time whose universal tag number is `tagNumber`, as readTime does. */
export function decodeTime(tagNumber: number, bytes: Buffer, context: string): Date {
  const text = bytes.toString('latin1');
  const isUtcTime = tagNumber === Type.UTCTIME;
  const isGeneralizedTime = tagNumber === Type.GENERALIZEDTIME;
  let match: RegExpExecArray | null = null;
  if (isUtcTime) {
    match = UTC_TIME.exec(text);
  } else if (isGeneralizedTime) {
    match = GENERALIZED_TIME.exec(text);
  }
  if (match === null) {
    throw new Error(`${context}: invalid time "${text}"`);
  }

  const [year, month, day, hours, minutes, seconds] = match.slice(1).map(Number) as [
    number, number, number, number, number, number,
  ];
  let fullYear = year;
  if (isUtcTime) {
    // RFC 5280 maps two-digit UTCTime years 50-99 to 19xx and 00-49 to 20xx.
    fullYear = year >= 50 ? 1900 + year : 2000 + year;
  }
  const date = new Date(0);
  date.setUTCFullYear(fullYear, month - 1, day);
  date.setUTCHours(hours, minutes, seconds, 0);
  if (date.getUTCMonth() !== month - 1 || date.getUTCDate() !== day || hours > 23 || minutes > 59 || seconds > 59) {
    throw new Error(`${context}: invalid time "${text}"`);
  }
  return date;
}

// ---------------------------------------------------------------------------------------------
// Names

export interface NameFields {
  readonly commonName: string;
  readonly organizations: readonly string[];
}

/** Checks name input. `prefix` is the field path of the name in error messages, such as "subject.". */
export function validateName(name: NameFields, prefix: string): void {
  if (typeof name.commonName !== 'string' || name.commonName.trim() === '') {
    throw new Error(`invalid ${prefix}commonName "${String(name.commonName)}": must not be empty`);
  }
  name.organizations.forEach((organization, index) => {
    if (typeof organization !== 'string' || organization.trim() === '') {
      throw new Error(`invalid ${prefix}organizations[${index}] "${String(organization)}": must not be empty`);
    }
  });
}

function attributeTypeAndValue(oid: string, value: string): Asn1 {
  return sequence([objectIdentifier(oid), utf8String(value)]);
}

/** Encodes CN, then each O, one attribute per RDN, as UTF8String. */
export function encodeName(name: NameFields): Asn1 {
  const attributes = [
    attributeTypeAndValue(OID.commonName, name.commonName),
    ...name.organizations.map((organization) => attributeTypeAndValue(OID.organizationName, organization)),
  ];
  return sequence(attributes.map((attribute) => setOf([attribute])));
}

/**
 * Reads CN and O from a Name and ignores other attributes. With several CN attributes the last
 * one wins, as in Go's pkix.Name, from which Kubernetes takes the user name of a client
 * certificate.
 */
export function decodeName(node: Asn1, context: string): { commonName: string; organizations: string[] } {
  expectUniversal(node, Type.SEQUENCE, 'Name', context);
  let commonName = '';
  const organizations: string[] = [];
  for (const rdn of childrenOf(node, context)) {
    for (const attribute of childrenOf(rdn, context)) {
      const type = readOid(childAt(attribute, 0, context), context);
      if (type === OID.commonName) {
        commonName = readString(childAt(attribute, 1, context), `${context} CN`);
      } else if (type === OID.organizationName) {
        organizations.push(readString(childAt(attribute, 1, context), `${context} O`));
      }
    }
  }
  return { commonName, organizations };
}

// ---------------------------------------------------------------------------------------------
// IP addresses

/** Returns the 4 or 16 octets of an IPv4 or IPv6 address, or undefined for invalid text or an IPv6 zone index. */
export function ipToBytes(text: string): Buffer | undefined {
  if (net.isIPv4(text)) {
    return Buffer.from(text.split('.').map(Number));
  }
  if (net.isIPv6(text) && !text.includes('%')) {
    return ipv6ToBytes(text);
  }
  return undefined;
}

/** Expands IPv6 text that net.isIPv6 accepted. */
function ipv6ToBytes(text: string): Buffer {
  const gap = text.indexOf('::');
  const head = hextets(gap === -1 ? text : text.slice(0, gap));
  const tail = gap === -1 ? [] : hextets(text.slice(gap + 2));
  const zeros: number[] = gap === -1 ? [] : new Array<number>(8 - head.length - tail.length).fill(0);
  const groups = [...head, ...zeros, ...tail];

  const bytes = Buffer.alloc(16);
  groups.forEach((group, index) => bytes.writeUInt16BE(group, index * 2));
  return bytes;
}

function hextets(part: string): number[] {
  if (part === '') {
    return [];
  }
  return part.split(':').flatMap((piece) => {
    if (piece.includes('.')) {
      const [a = 0, b = 0, c = 0, d = 0] = piece.split('.').map(Number);
      return [(a << 8) | b, (c << 8) | d];
    }
    return [Number.parseInt(piece, 16)];
  });
}

/**
 * Formats 4 octets as dotted decimal and 16 octets as the WHATWG URL standard serialises IPv6:
 * lowercase, no leading zeros, the first longest run of two or more zero groups as "::", and
 * IPv4-mapped addresses in hex ("::ffff:102:304").
 */
export function formatIp(bytes: Buffer): string {
  if (bytes.length === 4) {
    return [...bytes].join('.');
  }
  if (bytes.length !== 16) {
    throw new Error(`invalid IP address of ${bytes.length} octets: expected 4 or 16`);
  }

  const groups = Array.from({ length: 8 }, (_, index) => bytes.readUInt16BE(index * 2));
  const run = longestZeroRun(groups);
  if (run === undefined) {
    return groups.map((group) => group.toString(16)).join(':');
  }
  const before = groups.slice(0, run.start).map((group) => group.toString(16));
  const after = groups.slice(run.start + run.length).map((group) => group.toString(16));
  return `${before.join(':')}::${after.join(':')}`;
}

function longestZeroRun(groups: readonly number[]): { start: number; length: number } | undefined {
  let best: { start: number; length: number } | undefined;
  let start = 0;
  while (start < groups.length) {
    if (groups[start] !== 0) {
      start += 1;
      continue;
    }
    let end = start;
    while (end < groups.length && groups[end] === 0) {
      end += 1;
    }
    if (end - start >= 2 && (best === undefined || end - start > best.length)) {
      best = { start, length: end - start };
    }
    start = end;
  }
  return best;
}

// ---------------------------------------------------------------------------------------------
// Subject alternative names

export interface SubjectAltNames {
  readonly dnsNames: readonly string[];
  readonly ipAddresses: readonly string[];
  readonly uris: readonly string[];
}

/** GeneralName tag numbers from RFC 5280, section 4.2.1.6. */
const GENERAL_NAME = { dnsName: 2, uri: 6, ipAddress: 7 } as const;

/** Printable ASCII without space, which fits IA5String and the host names that TLS clients match. */
const PRINTABLE_ASCII = /^[\x21-\x7e]+$/;

// Each check names the failing field, such as "ipAddresses[1]", and its value.

function dnsNameBytes(name: string, index: number): Buffer {
  if (typeof name !== 'string' || !PRINTABLE_ASCII.test(name)) {
    throw new Error(`invalid dnsNames[${index}] "${String(name)}": expected non-empty ASCII without spaces`);
  }
  return Buffer.from(name, 'ascii');
}

function ipAddressBytes(address: string, index: number): Buffer {
  const bytes = typeof address === 'string' ? ipToBytes(address) : undefined;
  if (bytes === undefined) {
    throw new Error(
      `invalid ipAddresses[${index}] "${String(address)}": expected an IPv4 or IPv6 address without a zone index`,
    );
  }
  return bytes;
}

function uriBytes(uri: string, index: number): Buffer {
  if (typeof uri !== 'string' || !PRINTABLE_ASCII.test(uri) || !URL.canParse(uri)) {
    throw new Error(`invalid uris[${index}] "${String(uri)}": expected an absolute ASCII URI`);
  }
  return Buffer.from(uri, 'ascii');
}

/** Checks and encodes GeneralNames in the order DNS, IP, URI. Returns undefined when there are none. */
export function encodeSubjectAltNames(names: SubjectAltNames): Asn1 | undefined {
  const generalNames = [
    ...names.dnsNames.map((name, index) => contextPrimitive(GENERAL_NAME.dnsName, dnsNameBytes(name, index))),
    ...names.ipAddresses.map((address, index) => contextPrimitive(GENERAL_NAME.ipAddress, ipAddressBytes(address, index))),
    ...names.uris.map((uri, index) => contextPrimitive(GENERAL_NAME.uri, uriBytes(uri, index))),
  ];
  return generalNames.length === 0 ? undefined : sequence(generalNames);
}

/** Reads DNS, IP and URI names from the extnValue of subjectAltName and ignores other name types. */
export function decodeSubjectAltNames(extensionValue: Buffer): {
  dnsNames: string[];
  ipAddresses: string[];
  uris: string[];
} {
  const context = 'subjectAltName';
  const names = { dnsNames: [] as string[], ipAddresses: [] as string[], uris: [] as string[] };
  for (const generalName of childrenOf(parseDer(extensionValue, context), context)) {
    if (isContextTag(generalName, GENERAL_NAME.dnsName)) {
      names.dnsNames.push(primitiveBytes(generalName, context).toString('latin1'));
    } else if (isContextTag(generalName, GENERAL_NAME.ipAddress)) {
      names.ipAddresses.push(formatIp(primitiveBytes(generalName, context)));
    } else if (isContextTag(generalName, GENERAL_NAME.uri)) {
      names.uris.push(primitiveBytes(generalName, context).toString('latin1'));
    }
  }
  return names;
}

// ---------------------------------------------------------------------------------------------
// Extensions

export interface Extension {
  readonly oid: string;
  readonly critical: boolean;
  /** Contents of extnValue: the DER of the extension's own structure. */
  readonly value: Buffer;
}

export function encodeExtension(oid: string, critical: boolean, value: Asn1): Asn1 {
  const fields = [objectIdentifier(oid)];
  // DER leaves out a value equal to its DEFAULT, and "critical" defaults to FALSE.
  if (critical) {
    fields.push(booleanTrue());
  }
  fields.push(octetString(toDer(value)));
  return sequence(fields);
}

/** Reads a SEQUENCE OF Extension. */
export function readExtensions(node: Asn1, context: string): Extension[] {
  return childrenOf(node, context).map((extension) => {
    const fields = childrenOf(extension, context);
    const oid = readOid(childAt(extension, 0, context), context);
    const critical = fields.length === 3 ? readBoolean(childAt(extension, 1, context), context) : false;
    const value = readOctetString(childAt(extension, fields.length - 1, context), `${context} ${oid}`);
    return { oid, critical, value };
  });
}

// ---------------------------------------------------------------------------------------------
// Signed structures. Certificate and CertificationRequest share the shape
// SEQUENCE { data, AlgorithmIdentifier, BIT STRING signature }.

type HashName = 'sha256' | 'sha384' | 'sha512';

interface SignatureAlgorithm {
  readonly oid: string;
  readonly hash: HashName;
  readonly keyType: 'rsa' | 'ec';
}

const SIGNATURE_ALGORITHMS: readonly SignatureAlgorithm[] = [
  { oid: OID.sha256WithRSAEncryption, hash: 'sha256', keyType: 'rsa' },
  { oid: OID.sha384WithRSAEncryption, hash: 'sha384', keyType: 'rsa' },
  { oid: OID.sha512WithRSAEncryption, hash: 'sha512', keyType: 'rsa' },
  { oid: OID.ecdsaWithSHA256, hash: 'sha256', keyType: 'ec' },
  { oid: OID.ecdsaWithSHA384, hash: 'sha384', keyType: 'ec' },
  { oid: OID.ecdsaWithSHA512, hash: 'sha512', keyType: 'ec' },
];

/** Hash for signing with each ECDSA curve, of the same strength as the curve. */
const ECDSA_HASHES: Readonly<Record<string, HashName>> = { prime256v1: 'sha256', secp384r1: 'sha384' };

/** The signature algorithm of each signing key seen so far. Reading a key's details is a native call, made twice per certificate. */
const algorithmsByKey = new WeakMap<crypto.KeyObject, SignatureAlgorithm>();

function signatureAlgorithmFor(key: crypto.KeyObject): SignatureAlgorithm {
  let algorithm = algorithmsByKey.get(key);
  if (algorithm === undefined) {
    algorithm = findSignatureAlgorithm(key);
    algorithmsByKey.set(key, algorithm);
  }
  return algorithm;
}

function findSignatureAlgorithm(key: crypto.KeyObject): SignatureAlgorithm {
  const curve = key.asymmetricKeyDetails?.namedCurve;
  let hash: HashName | undefined;
  if (key.asymmetricKeyType === 'rsa') {
    hash = 'sha256';
  } else if (curve !== undefined) {
    hash = ECDSA_HASHES[curve];
  }
  const algorithm = SIGNATURE_ALGORITHMS.find(
    (candidate) => candidate.keyType === key.asymmetricKeyType && candidate.hash === hash,
  );
  if (algorithm === undefined) {
    const description = [key.asymmetricKeyType, curve].filter((part) => part !== undefined).join(' ');
    throw new Error(`unsupported signing key "${description}": expected RSA, ECDSA P-256 or ECDSA P-384`);
  }
  return algorithm;
}

/**
 * Returns the AlgorithmIdentifier that signStructure uses with this key. A certificate repeats
 * it inside the TBSCertificate. RFC 4055 requires NULL parameters for RSA PKCS#1 v1.5 and
 * RFC 5758 requires absent parameters for ECDSA.
 */
export function signatureAlgorithmIdentifier(key: crypto.KeyObject): Asn1 {
  const algorithm = signatureAlgorithmFor(key);
  const parameters = algorithm.keyType === 'rsa' ? [nullValue()] : [];
  return sequence([objectIdentifier(algorithm.oid), ...parameters]);
}

/** RSA keys sign with PKCS#1 v1.5 padding and ECDSA signatures are DER-encoded, as X.509 requires. */
function signingOptions(key: crypto.KeyObject): crypto.SignKeyObjectInput {
  return key.asymmetricKeyType === 'rsa'
    ? { key, padding: crypto.constants.RSA_PKCS1_PADDING }
    : { key, dsaEncoding: 'der' };
}

/** Signs the DER of `data` natively and returns the DER of the signed structure. */
export function signStructure(data: Asn1, privateKey: crypto.KeyObject): Buffer {
  if (privateKey.type !== 'private') {
    throw new Error(`invalid signing key: expected a private key, got a ${privateKey.type} key`);
  }
  const algorithm = signatureAlgorithmFor(privateKey);
  // The data is encoded once and the outer SEQUENCE is put around the bytes, which gives the same
  // DER as encoding the whole tree without a second pass over the certificate.
  const dataDer = toDer(data);
  const signature = crypto.sign(algorithm.hash, dataDer, signingOptions(privateKey));
  return derSequence([dataDer, toDer(signatureAlgorithmIdentifier(privateKey)), toDer(bitString(signature))]);
}

/** Encodes a SEQUENCE whose elements are already DER. */
function derSequence(elements: readonly Buffer[]): Buffer {
  let contentsLength = 0;
  for (const part of elements) contentsLength += part.length;
  const output = Buffer.allocUnsafe(1 + lengthOctets(contentsLength) + contentsLength);
  output[0] = 0x30;
  let offset = writeLength(output, 1, contentsLength);
  for (const part of elements) {
    output.set(part, offset);
    offset += part.length;
  }
  return output;
}

/** A tag-length-value element in a DER buffer: its first tag octet and where its contents start and end. */
export interface DerElement {
  readonly tag: number;
  readonly start: number;
  readonly end: number;
}

/**
 * Reads the element at `offset` of `der` without decoding its contents. Accepts only one-octet
 * tags and definite lengths in the minimal form, and throws when the element does not fit inside
 * `limit`. `context` starts the error message.
 */
export function readDerElement(der: Buffer, offset: number, limit: number, context: string): DerElement {
  const element = derElementAt(der, offset, limit);
  if (typeof element === 'string') {
    throw new Error(`${context}: ${element}`);
  }
  return element;
}

/** Reads the element at `offset` as readDerElement does, and returns what is wrong with it as text. */
function derElementAt(der: Buffer, offset: number, limit: number): DerElement | string {
  if (offset + 2 > limit) {
    return `the input ends inside the element at offset ${offset}`;
  }
  const tag = der[offset]!;
  if ((tag & 0x1f) === 0x1f) {
    return `multi-octet tag at offset ${offset}, which certificates do not use`;
  }
  const first = der[offset + 1]!;
  let start = offset + 2;
  let length = first;
  if (first === 0x80) {
    return `indefinite length at offset ${offset}, which only BER allows; encode the input as DER`;
  }
  if (first > 0x80) {
    const count = first & 0x7f;
    if (count > 4) {
      return `length of ${count} octets at offset ${offset}: at most 4 are supported`;
    }
    if (start + count > limit) {
      return `the input ends inside the length at offset ${offset}`;
    }
    length = 0;
    for (let index = 0; index < count; index++) {
      length = length * 256 + der[start + index]!;
    }
    start += count;
    if (length <= 0x7f || der[offset + 2] === 0) {
      return `length at offset ${offset} is not in the minimal form DER requires`;
    }
  }
  if (start + length > limit) {
    return `the element at offset ${offset} has ${length} octets of contents, but only ${limit - start} remain in the input or in the element around it`;
  }
  return { tag, start, end: start + length };
}

/**
 * Checks the signature of a parsed signed structure with `publicKey`. Returns false for a wrong
 * signature and throws for an unsupported algorithm or one that does not fit the key type.
 */
export function verifyStructure(signed: Asn1, publicKey: crypto.KeyObject, context: string): boolean {
  const data = toDer(childAt(signed, 0, context));
  const algorithmOid = readOid(childAt(childAt(signed, 1, context), 0, `${context} signatureAlgorithm`), context);
  const signature = readOctetAlignedBitString(childAt(signed, 2, context), `${context} signature`);

  const algorithm = SIGNATURE_ALGORITHMS.find((candidate) => candidate.oid === algorithmOid);
  if (algorithm === undefined) {
    throw new Error(`${context}: unsupported signature algorithm ${algorithmOid}`);
  }
  if (algorithm.keyType !== publicKey.asymmetricKeyType) {
    throw new Error(
      `${context}: signature algorithm ${algorithmOid} does not fit a ${String(publicKey.asymmetricKeyType)} key`,
    );
  }
  return crypto.verify(algorithm.hash, data, signingOptions(publicKey), signature);
}

// ---------------------------------------------------------------------------------------------
// PEM (RFC 7468)

export interface PemBlock {
  readonly label: string;
  /** RFC 1421 headers such as "Proc-Type: 4,ENCRYPTED", which some legacy keys carry. */
  readonly headers: readonly string[];
  /** Base64 body without whitespace. */
  readonly base64: string;
}

const PEM_BLOCK = /-----BEGIN ([^\r\n-]+)-----([\s\S]*?)-----END \1-----/g;

export function readPemBlocks(input: string | Buffer): PemBlock[] {
  const text = typeof input === 'string' ? input : input.toString('utf8');
  return [...text.matchAll(PEM_BLOCK)].map((match) => {
    const label = match[1] ?? '';
    const lines = (match[2] ?? '').split(/\r?\n/).map((line) => line.trim());
    const headerCount = lines.findIndex((line, index) => index > 0 && line === '' && lines[index - 1]?.includes(':'));
    const headers = headerCount === -1 ? [] : lines.slice(0, headerCount).filter((line) => line !== '');
    const bodyLines = headerCount === -1 ? lines : lines.slice(headerCount + 1);
    return { label, headers, base64: bodyLines.join('').replace(/\s+/g, '') };
  });
}

/** Formats a block with LF line ends, 64-character base64 lines and a trailing newline. */
export function formatPem(block: PemBlock): string {
  const lines = [`-----BEGIN ${block.label}-----`];
  if (block.headers.length > 0) {
    lines.push(...block.headers, '');
  }
  for (let offset = 0; offset < block.base64.length; offset += 64) {
    lines.push(block.base64.slice(offset, offset + 64));
  }
  lines.push(`-----END ${block.label}-----`);
  return `${lines.join('\n')}\n`;
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

export function pemBlockToDer(block: PemBlock): Buffer {
  if (block.headers.length > 0) {
    throw new Error(`unsupported PEM block "${block.label}": it has headers (${block.headers.join('; ')})`);
  }
  if (!BASE64.test(block.base64)) {
    throw new Error(`invalid PEM block "${block.label}": the body is not base64`);
  }
  return Buffer.from(block.base64, 'base64');
}

export function derToPem(label: string, der: Buffer): string {
  return formatPem({ label, headers: [], base64: der.toString('base64') });
}
