/**
 * Bootstrap tokens and the kube-system Secrets that back them, in the format that the apiserver's
 * bootstrap token authenticator accepts (Kubernetes "Authenticating with Bootstrap Tokens", and
 * k8s.io/cluster-bootstrap token/api/types.go):
 *
 * - the token is `<id>.<secret>`, 6 and 16 characters of `[a-z0-9]`; the id is public, the secret is not;
 * - the Secret is `kube-system/bootstrap-token-<id>` of type `bootstrap.kubernetes.io/token`;
 * - the token authenticates as user `system:bootstrap:<id>` in group `system:bootstrappers` plus the
 *   groups of `auth-extra-groups`, and only while `expiration` (RFC 3339) lies in the future.
 *
 * The secret half never leaves a BootstrapToken by accident: String(), JSON.stringify and
 * util.inspect show only the id, and `reveal()` is the one way to read the whole token.
 */
import * as crypto from 'node:crypto';
import * as util from 'node:util';
import {
  ANNOTATION_NODE,
  BOOTSTRAP_NAMESPACE,
  LABEL_CLUSTER,
  LABEL_MANAGED_BY,
  LABEL_NODE,
  MANAGED_BY_VALUE,
  type SecretObject,
} from './types';

export const REDACTED = '<redacted>';

export const TOKEN_ID_PATTERN = /^[a-z0-9]{6}$/;
export const TOKEN_SECRET_PATTERN = /^[a-z0-9]{16}$/;
export const TOKEN_PATTERN = /^([a-z0-9]{6})\.([a-z0-9]{16})$/;
const TOKEN_ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';

/** Type of every bootstrap token Secret. */
export const BOOTSTRAP_TOKEN_SECRET_TYPE = 'bootstrap.kubernetes.io/token';
export const BOOTSTRAP_TOKEN_SECRET_PREFIX = 'bootstrap-token-';

/**
 * Every extra group of a token must match this, or the authenticator rejects the token outright.
 * A bare `system:bootstrappers` does not match.
 */
export const BOOTSTRAP_GROUP_PATTERN = /^system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]$/;

/** Default token lifetime: long enough for a node to join, short enough that a leaked token soon stops working. */
export const DEFAULT_TOKEN_TTL_MS = 60 * 60 * 1000;

/** Raised for an invalid token, group or lifetime. The message never contains a token secret. */
export class BootstrapTokenError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BootstrapTokenError';
  }
}

/** Returns a uniformly drawn integer in [0, max); crypto.randomInt by default, replaceable in tests. */
export type RandomInt = (max: number) => number;

function randomString(length: number, randomInt: RandomInt): string {
  let text = '';
  for (let i = 0; i < length; i++) text += TOKEN_ALPHABET[randomInt(TOKEN_ALPHABET.length)];
  return text;
}

/** A bootstrap token `<id>.<secret>` whose secret half is redacted wherever the token is printed or serialised. */
export class BootstrapToken {
  readonly id: string;
  readonly #secret: string;

  constructor(id: string, secret: string) {
    if (!TOKEN_ID_PATTERN.test(id)) throw new BootstrapTokenError('invalid bootstrap token id: expected 6 characters of [a-z0-9]');
    if (!TOKEN_SECRET_PATTERN.test(secret)) throw new BootstrapTokenError(`invalid secret for bootstrap token ${id}: expected 16 characters of [a-z0-9]`);
    this.id = id;
    this.#secret = secret;
  }

  /** Draws a new token from a cryptographic random source, 6 + 16 characters uniform over `[a-z0-9]`. */
  static generate(randomInt: RandomInt = crypto.randomInt): BootstrapToken {
    return new BootstrapToken(randomString(6, randomInt), randomString(16, randomInt));
  }

  /** Parses `<id>.<secret>`. The error message does not repeat the input, which may be a real token. */
  static parse(text: string): BootstrapToken {
    const match = TOKEN_PATTERN.exec(text);
    if (match === null) throw new BootstrapTokenError('invalid bootstrap token: expected <id>.<secret> with 6 and 16 characters of [a-z0-9]');
    return new BootstrapToken(match[1]!, match[2]!);
  }

  /** User name the apiserver assigns to requests that carry this token. */
  get username(): string {
    return `system:bootstrap:${this.id}`;
  }

  /** Secret name in kube-system. */
  get secretName(): string {
    return `${BOOTSTRAP_TOKEN_SECRET_PREFIX}${this.id}`;
  }

  /** Returns the whole token. Call it only where the token is written into a Secret or a kubeconfig. */
  reveal(): string {
    return `${this.id}.${this.#secret}`;
  }

  /** Returns the secret half. Call it only where the token is written into a Secret. */
  revealSecret(): string {
    return this.#secret;
  }

  /** Compares with another token in constant time. */
  equals(other: BootstrapToken): boolean {
    return other.id === this.id && crypto.timingSafeEqual(Buffer.from(other.#secret), Buffer.from(this.#secret));
  }

  toString(): string {
    return `${this.id}.${REDACTED}`;
  }

  toJSON(): string {
    return this.toString();
  }

  [util.inspect.custom](): string {
    return `BootstrapToken(${this.toString()})`;
  }
}

/** Returns kubetrust's default extra group for the bootstrap tokens of a cluster. */
export function defaultBootstrapGroup(cluster: string): string {
  return validateBootstrapGroup(`system:bootstrappers:kubetrust:${cluster}`);
}

/** Returns the group unchanged, or throws BootstrapTokenError when the authenticator would reject a token carrying it. */
export function validateBootstrapGroup(group: string): string {
  if (BOOTSTRAP_GROUP_PATTERN.test(group)) return group;
  throw new BootstrapTokenError(
    `invalid bootstrap group "${group}": expected system:bootstrappers: followed by lowercase letters, digits, ":" and "-", ending in a letter or digit`,
  );
}

/**
 * Returns the expiration of a token made at `now` with lifetime `ttlMs`, rounded up to a whole
 * second so that it lies strictly after `now`. Throws BootstrapTokenError for a lifetime that is
 * not a positive finite number of milliseconds, because such a token would be born expired.
 */
export function tokenExpiration(now: Date, ttlMs: number): Date {
  if (!Number.isFinite(ttlMs) || ttlMs <= 0) {
    throw new BootstrapTokenError(`invalid bootstrap token lifetime ${String(ttlMs)} ms: expected a positive duration such as 1h`);
  }
  return new Date(Math.ceil((now.getTime() + ttlMs) / 1000) * 1000);
}

/** Formats a time as RFC 3339 in UTC with whole seconds, for example `2025-01-02T03:04:05Z`. */
export function formatRfc3339(time: Date): string {
  return time.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export interface TokenSecretOptions {
  readonly token: BootstrapToken;
  readonly cluster: string;
  readonly node: string;
  /** Extra group of the token; it must be the group that the bootstrap ClusterRoleBindings name. */
  readonly group: string;
  readonly now: Date;
  /** Defaults to DEFAULT_TOKEN_TTL_MS. */
  readonly ttlMs?: number;
}

/** Label values are at most 63 characters; longer node names are kept only in the annotation. */
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

function isLabelValue(value: string): boolean {
  return value.length <= 63 && LABEL_VALUE.test(value);
}

/** Labels that select kubetrust's token Secrets of a cluster, optionally of one node. */
export function tokenLabels(cluster: string, node?: string): Record<string, string> {
  const labels: Record<string, string> = { [LABEL_MANAGED_BY]: MANAGED_BY_VALUE, [LABEL_CLUSTER]: cluster };
  if (node !== undefined && isLabelValue(node)) labels[LABEL_NODE] = node;
  return labels;
}

/** Formats labels as a Kubernetes label selector (`a=b,c=d`). */
export function labelSelector(labels: Readonly<Record<string, string>>): string {
  return Object.entries(labels)
    .map(([key, value]) => `${key}=${value}`)
    .join(',');
}

const b64 = (text: string): string => Buffer.from(text, 'utf8').toString('base64');

/**
 * Builds the Secret that backs a bootstrap token. The object carries the real secret for the API,
 * but JSON.stringify and util.inspect of it show `<redacted>` in place of `token-secret`.
 */
export function tokenSecret(options: TokenSecretOptions): SecretObject {
  const group = validateBootstrapGroup(options.group);
  const expiration = tokenExpiration(options.now, options.ttlMs ?? DEFAULT_TOKEN_TTL_MS);
  const secret: SecretObject = {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: {
      name: options.token.secretName,
      namespace: BOOTSTRAP_NAMESPACE,
      labels: tokenLabels(options.cluster, options.node),
      annotations: { [ANNOTATION_NODE]: options.node },
    },
    type: BOOTSTRAP_TOKEN_SECRET_TYPE,
    data: {
      'token-id': b64(options.token.id),
      'token-secret': b64(options.token.revealSecret()),
      'usage-bootstrap-authentication': b64('true'),
      'auth-extra-groups': b64(group),
      expiration: b64(formatRfc3339(expiration)),
      description: b64(`kubetrust bootstrap token for node ${options.node} of cluster ${options.cluster}`),
    },
  };
  return withRedactedSecret(secret);
}

/** Returns a copy of the Secret with `token-secret` replaced by `<redacted>`. */
export function redactSecret(secret: SecretObject): SecretObject {
  if (secret.data?.['token-secret'] === undefined) return secret;
  return { ...secret, data: { ...secret.data, 'token-secret': REDACTED } };
}

/** Adds non-enumerable toJSON and inspect hooks so that printing or serialising the Secret hides the token secret. */
export function withRedactedSecret<T extends SecretObject>(secret: T): T {
  Object.defineProperty(secret, 'toJSON', { value: () => redactSecret({ ...secret }), enumerable: false });
  Object.defineProperty(secret, util.inspect.custom, {
    value: (depth: number, options: util.InspectOptionsStylized) => util.inspect(redactSecret({ ...secret }), { ...options, depth }),
    enumerable: false,
  });
  return secret;
}

/** What kubetrust reads back from a token Secret. The secret half is never decoded. */
export interface TokenRecord {
  readonly secretName: string;
  readonly tokenId: string;
  readonly cluster: string | undefined;
  readonly node: string | undefined;
  readonly groups: readonly string[];
  /** Undefined when the Secret has no expiration. An unparseable value reads as the epoch, so it counts as expired, as the apiserver treats it. */
  readonly expiration: Date | undefined;
  readonly usageBootstrapAuthentication: boolean;
  readonly description: string | undefined;
}

const decode = (value: string | undefined): string | undefined => (value === undefined ? undefined : Buffer.from(value, 'base64').toString('utf8'));

function parseExpiration(text: string | undefined): Date | undefined {
  if (text === undefined) return undefined;
  const time = Date.parse(text);
  return Number.isNaN(time) ? new Date(0) : new Date(time);
}

/** Reads a bootstrap token Secret, or returns undefined for a Secret of another type. */
export function readTokenSecret(secret: SecretObject): TokenRecord | undefined {
  if (secret.type !== BOOTSTRAP_TOKEN_SECRET_TYPE) return undefined;
  const data = secret.data ?? {};
  const name = secret.metadata.name;
  const groups = decode(data['auth-extra-groups']);
  return {
    secretName: name,
    tokenId: decode(data['token-id']) ?? name.slice(BOOTSTRAP_TOKEN_SECRET_PREFIX.length),
    cluster: secret.metadata.labels?.[LABEL_CLUSTER],
    node: secret.metadata.annotations?.[ANNOTATION_NODE] ?? secret.metadata.labels?.[LABEL_NODE],
    groups: groups === undefined || groups === '' ? [] : groups.split(','),
    expiration: parseExpiration(decode(data.expiration)),
    usageBootstrapAuthentication: decode(data['usage-bootstrap-authentication']) === 'true',
    description: decode(data.description),
  };
}

export type TokenState = 'valid' | 'expiring' | 'expired';

/**
 * Classifies a token at `now`: expired once its expiration has passed, expiring when less than
 * `minRemainingMs` is left, valid otherwise. A token without an expiration is valid.
 */
export function tokenState(record: Pick<TokenRecord, 'expiration'>, now: Date, minRemainingMs: number): TokenState {
  if (record.expiration === undefined) return 'valid';
  const remaining = record.expiration.getTime() - now.getTime();
  if (remaining <= 0) return 'expired';
  return remaining < minRemainingMs ? 'expiring' : 'valid';
}
