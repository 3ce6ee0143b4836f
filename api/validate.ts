import { isDecimalString } from '../billing/money.js';
import { ValidationError } from '../billing/errors.js';
import { UUID_RE } from '../db/ids.js';

/**
 * Request validation. Every failure names the field (as a path like `usage[2].timestamp`) and the
 * reason. Fields Accrue does not support are rejected by name, never silently ignored.
 */
export type Obj = Record<string, unknown>;

const join = (path: string, key: string) => (path ? `${path}.${key}` : key);

export function objectAt(value: unknown, path: string, allowed: readonly string[]): Obj {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ValidationError(path || 'body', 'must be a JSON object');
  }
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) throw new ValidationError(join(path, key), 'is not a supported field');
  }
  return value as Obj;
}

export function str(o: Obj, key: string, path = '', opts: { optional?: boolean; max?: number } = {}): string | undefined {
  const v = o[key];
  const field = join(path, key);
  if (v === undefined || v === null) {
    if (opts.optional) return undefined;
    throw new ValidationError(field, 'is required');
  }
  if (typeof v !== 'string') throw new ValidationError(field, `must be a string, got ${typeName(v)}`);
  if (v.trim() === '') throw new ValidationError(field, 'must not be empty');
  if (opts.max && v.length > opts.max) throw new ValidationError(field, `must be at most ${opts.max} characters`);
  return v;
}

export function reqStr(o: Obj, key: string, path = '', max?: number): string {
  return str(o, key, path, { max }) as string;
}

export function uuid(o: Obj, key: string, path = '', opts: { optional?: boolean } = {}): string | undefined {
  const v = str(o, key, path, opts);
  if (v !== undefined && !UUID_RE.test(v)) throw new ValidationError(join(path, key), 'must be a UUID');
  return v?.toLowerCase();
}

export function reqUuid(o: Obj, key: string, path = ''): string {
  return uuid(o, key, path) as string;
}

export function bool(o: Obj, key: string, path = '', opts: { optional?: boolean } = {}): boolean | undefined {
  const v = o[key];
  if (v === undefined || v === null) {
    if (opts.optional) return undefined;
    throw new ValidationError(join(path, key), 'is required');
  }
  if (typeof v !== 'boolean') throw new ValidationError(join(path, key), `must be a boolean, got ${typeName(v)}`);
  return v;
}

/** RFC 3339 timestamp with an explicit offset; returned as a canonical UTC ISO string. */
export function timestamp(o: Obj, key: string, path = '', opts: { optional?: boolean } = {}): string | undefined {
  const v = str(o, key, path, opts);
  if (v === undefined) return undefined;
  if (!/^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/.test(v) || Number.isNaN(Date.parse(v))) {
    throw new ValidationError(join(path, key), `must be an RFC 3339 timestamp such as 2026-01-01T00:00:00Z, got ${JSON.stringify(v)}`);
  }
  return new Date(v).toISOString();
}

export function reqTimestamp(o: Obj, key: string, path = ''): string {
  return timestamp(o, key, path) as string;
}

export function oneOf<T extends string>(o: Obj, key: string, values: readonly T[], path = '', opts: { optional?: boolean } = {}): T | undefined {
  const v = str(o, key, path, opts);
  if (v === undefined) return undefined;
  if (!values.includes(v as T)) {
    throw new ValidationError(join(path, key), `must be one of ${values.join(', ')}; got ${JSON.stringify(v)}`);
  }
  return v as T;
}

/** A decimal given as a JSON number or a numeric string, returned as a decimal string. */
export function decimal(o: Obj, key: string, path = '', opts: { optional?: boolean; min?: number } = {}): string | undefined {
  const v = o[key];
  const field = join(path, key);
  if (v === undefined || v === null) {
    if (opts.optional) return undefined;
    throw new ValidationError(field, 'is required');
  }
  let s: string;
  if (typeof v === 'number' && Number.isFinite(v)) s = String(v);
  else if (typeof v === 'string' && isDecimalString(v)) s = v.trim();
  else throw new ValidationError(field, `must be a number, got ${typeName(v)}${typeof v === 'string' ? ` ${JSON.stringify(v)}` : ''}`);
  if (opts.min !== undefined && Number(s) < opts.min) throw new ValidationError(field, `must be >= ${opts.min}`);
  return s;
}

export function stringArray(o: Obj, key: string, path = '', opts: { optional?: boolean; nonEmpty?: boolean } = {}): string[] | undefined {
  const v = o[key];
  const field = join(path, key);
  if (v === undefined || v === null) {
    if (opts.optional) return undefined;
    throw new ValidationError(field, 'is required');
  }
  if (!Array.isArray(v)) throw new ValidationError(field, `must be an array of strings, got ${typeName(v)}`);
  if (opts.nonEmpty && v.length === 0) throw new ValidationError(field, 'must not be empty');
  v.forEach((item, i) => {
    if (typeof item !== 'string' || item === '') throw new ValidationError(`${field}[${i}]`, 'must be a non-empty string');
  });
  return v as string[];
}

export function stringRecord(o: Obj, key: string, path = ''): Record<string, string> | undefined {
  const v = o[key];
  const field = join(path, key);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'object' || Array.isArray(v)) throw new ValidationError(field, `must be an object of strings, got ${typeName(v)}`);
  for (const [k, val] of Object.entries(v)) {
    if (typeof val !== 'string') throw new ValidationError(`${field}.${k}`, `must be a string, got ${typeName(val)}`);
  }
  return v as Record<string, string>;
}

export function email(o: Obj, key: string, path = ''): string | undefined {
  const v = str(o, key, path, { optional: true, max: 320 });
  if (v !== undefined && !/^[^\s@<>,;]+@[^\s@<>,;]+\.[^\s@<>,;]+$/.test(v)) {
    throw new ValidationError(join(path, key), `must be an email address, got ${JSON.stringify(v)}`);
  }
  return v;
}

export function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}

/** Billing boundaries (contract and rate dates) fall on whole UTC hours, the aggregates' grain. */
export function hourTimestamp(o: Obj, key: string, path = '', opts: { optional?: boolean } = {}): string | undefined {
  const v = timestamp(o, key, path, opts);
  if (v !== undefined && Date.parse(v) % 3_600_000 !== 0) throw new ValidationError(join(path, key), `must be on an hour boundary (UTC), got ${v}`);
  return v;
}
