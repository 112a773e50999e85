/**
 * Shape checks for parsed YAML: known fields, required fields and value types. Each problem
 * becomes an issue, and reading goes on so that one pass reports every problem.
 */
import type { InventoryIssue } from './types';

/** A YAML mapping as the parser returns it with `mapAsMap`. Keys are usually strings. */
export type Mapping = ReadonlyMap<unknown, unknown>;

/** Issues in the order they were found. */
export class IssueList {
  readonly items: InventoryIssue[] = [];

  add(path: string, message: string, fix: string): void {
    this.items.push({ path, message, fix });
  }
}

export function fieldPath(parent: string, key: string): string {
  return parent === '' ? key : `${parent}.${key}`;
}

export function indexPath(parent: string, index: number): string {
  return `${parent}[${index}]`;
}

export function isMapping(value: unknown): value is Mapping {
  return value instanceof Map;
}

/** Describes a parsed YAML value for a message, with the value itself when it is a scalar. */
export function describeValue(value: unknown): string {
  if (value === null || value === undefined) {
    return 'an empty value';
  }
  if (typeof value === 'string') {
    return `the string ${JSON.stringify(value)}`;
  }
  if (typeof value === 'number' || typeof value === 'bigint') {
    return `the number ${String(value)}`;
  }
  if (typeof value === 'boolean') {
    return `the boolean ${String(value)}`;
  }
  if (Array.isArray(value)) {
    return 'a list';
  }
  if (isMapping(value)) {
    return 'a mapping';
  }
  return 'a value of an unsupported type';
}

/** Checks that `value` is a string and reports a wrong type otherwise. */
export function expectString(
  value: unknown,
  path: string,
  example: string,
  issues: IssueList,
): string | undefined {
  if (typeof value === 'string') {
    return value;
  }
  issues.add(
    path,
    `expected a string, found ${describeValue(value)}`,
    `write a string such as ${example}, in quotes if it could be read as a number or boolean`,
  );
  return undefined;
}

/**
 * Reads the fields of one YAML mapping. Unknown keys are reported when the reader is made.
 * A field that is absent or null counts as not set.
 */
export class MappingReader {
  /** Allowed fields that an unknown field of this mapping misspells, which reportUnknownFields has already named. */
  private readonly misspelled = new Set<string>();

  private constructor(
    readonly path: string,
    private readonly mapping: Mapping,
    private readonly issues: IssueList,
  ) {}

  /**
   * Returns a reader for `value`, or undefined after reporting a wrong type when `value`
   * is not a mapping. `example` shows a valid mapping in YAML flow style.
   */
  static of(
    value: unknown,
    path: string,
    allowed: readonly string[],
    example: string,
    issues: IssueList,
  ): MappingReader | undefined {
    if (!isMapping(value)) {
      issues.add(path, `expected a mapping, found ${describeValue(value)}`, `write a mapping such as ${example}`);
      return undefined;
    }
    const reader = new MappingReader(path, value, issues);
    reader.reportUnknownFields(allowed);
    return reader;
  }

  /** Returns a reader with no fields, for an optional block that is not set. */
  static empty(path: string, issues: IssueList): MappingReader {
    return new MappingReader(path, new Map(), issues);
  }

  has(key: string): boolean {
    const value = this.mapping.get(key);
    return value !== undefined && value !== null;
  }

  pathOf(key: string): string {
    return fieldPath(this.path, key);
  }

  /** Returns the raw value of a field, or undefined when it is absent or null. */
  raw(key: string): unknown {
    const value = this.mapping.get(key);
    return value === null ? undefined : value;
  }

  /** Reads a required string field. `example` is a valid value, such as `https://192.0.2.100:6443`. */
  requiredString(key: string, example: string): string | undefined {
    if (!this.has(key)) {
      this.reportMissing(key, example);
      return undefined;
    }
    return expectString(this.raw(key), this.pathOf(key), example, this.issues);
  }

  /** Reads an optional string field, returning `fallback` when it is not set. */
  optionalString(key: string, example: string, fallback: string): string | undefined {
    if (!this.has(key)) {
      return fallback;
    }
    return expectString(this.raw(key), this.pathOf(key), example, this.issues);
  }

  /** Reads a required list field. `example` is a valid list in flow style, such as `[etcd]`. */
  requiredList(key: string, example: string): readonly unknown[] | undefined {
    if (!this.has(key)) {
      this.reportMissing(key, example);
      return undefined;
    }
    return this.expectList(key, example);
  }

  /** Reads an optional list field, returning an empty list when it is not set. */
  optionalList(key: string, example: string): readonly unknown[] | undefined {
    if (!this.has(key)) {
      return [];
    }
    return this.expectList(key, example);
  }

  /** Reads a required nested mapping. */
  requiredMapping(key: string, allowed: readonly string[], example: string): MappingReader | undefined {
    if (!this.has(key)) {
      this.reportMissing(key, example);
      return undefined;
    }
    return MappingReader.of(this.raw(key), this.pathOf(key), allowed, example, this.issues);
  }

  /** Reads an optional nested mapping, returning a reader with no fields when it is not set. */
  optionalMapping(key: string, allowed: readonly string[], example: string): MappingReader | undefined {
    if (!this.has(key)) {
      return MappingReader.empty(this.pathOf(key), this.issues);
    }
    return MappingReader.of(this.raw(key), this.pathOf(key), allowed, example, this.issues);
  }

  private expectList(key: string, example: string): readonly unknown[] | undefined {
    const value = this.raw(key);
    if (Array.isArray(value)) {
      return value as readonly unknown[];
    }
    this.issues.add(
      this.pathOf(key),
      `expected a list, found ${describeValue(value)}`,
      `write ${key} as a list, such as ${key}: ${example}`,
    );
    return undefined;
  }

  private reportMissing(key: string, example: string): void {
    // The unknown-field issue already gives the rename as its fix. A second fix to add the field
    // would have the operator write it twice.
    if (this.misspelled.has(key)) {
      return;
    }
    const where = this.path === '' ? 'at the top level' : `under ${this.path}`;
    this.issues.add(this.pathOf(key), `missing required field "${key}"`, `add ${key}: ${example} ${where}`);
  }

  private reportUnknownFields(allowed: readonly string[]): void {
    for (const key of this.mapping.keys()) {
      const name = typeof key === 'string' ? key : String(key);
      if (typeof key === 'string' && allowed.includes(key)) {
        continue;
      }
      const similar = findSimilarName(name, allowed);
      if (similar !== undefined) {
        this.misspelled.add(similar);
      }
      const fix =
        similar === undefined
          ? `remove "${name}" or rename it to one of the allowed fields: ${allowed.join(', ')}`
          : `rename "${name}" to "${similar}"`;
      this.issues.add(fieldPath(this.path, name), `unknown field "${name}"`, fix);
    }
  }
}

/**
 * Returns the allowed name that `name` most likely misspells: the same name in other letter
 * case, or one within two single-character edits. Returns undefined when none is that close.
 */
export function findSimilarName(name: string, allowed: readonly string[]): string | undefined {
  const lower = name.toLowerCase();
  const sameLetters = allowed.find((candidate) => candidate.toLowerCase() === lower);
  if (sameLetters !== undefined) {
    return sameLetters;
  }
  let best: string | undefined;
  let bestDistance = 3;
  for (const candidate of allowed) {
    const distance = editDistance(lower, candidate.toLowerCase());
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}

/** Levenshtein distance between two strings. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min(previous[j]! + 1, current[j - 1]! + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length]!;
}

/** Reads a string field that must be one of `choices`. */
export function readChoice<T extends string>(
  reader: MappingReader,
  key: string,
  choices: readonly T[],
  fallback: T,
  description: string,
  issues: IssueList,
): T | undefined {
  const value = reader.optionalString(key, fallback, fallback);
  if (value === undefined) {
    return undefined;
  }
  const choice = choices.find((candidate) => candidate === value);
  if (choice !== undefined) {
    return choice;
  }

  const similar = findSimilarName(value, choices);
  issues.add(
    reader.pathOf(key),
    `unknown ${description} "${value}"`,
    similar === undefined ? `write one of ${choices.join(', ')}` : `write ${key}: ${similar}, or another of ${choices.join(', ')}`,
  );
  return undefined;
}
