import { amountBoundProblem, dec, isDecimalString } from '../../billing/money.js';
import { ValidationError } from '../../billing/errors.js';
import { UUID_RE } from '../../db/ids.js';

/**
 * Input validation, shared by the API's routes and the operations that take Metronome-shaped
 * input (a contract created by a route or by the CRM's deal activity). Every failure names the field (as a path like `usage[2].timestamp`) and the
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

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?(?:[Zz]|[+-](\d{2}):(\d{2}))$/;

/**
 * RFC 3339 timestamp with an explicit offset; returned as a canonical UTC ISO string. Every
 * component must exist as written: `Date.parse` rolls `2026-11-31` over to 1 December and
 * `T24:00` to the next day, so the calendar is checked here, not left to it.
 */
export function timestamp(o: Obj, key: string, path = '', opts: { optional?: boolean } = {}): string | undefined {
  const v = str(o, key, path, opts);
  if (v === undefined) return undefined;
  const m = RFC3339.exec(v);
  const bad = (why: string) => new ValidationError(join(path, key), `must be an RFC 3339 timestamp such as 2026-01-01T00:00:00Z, got ${JSON.stringify(v)}${why}`);
  if (!m) throw bad('');
  const [year, month, day, hour, minute, second, offH, offM] = [m[1], m[2], m[3], m[4], m[5], m[6], m[8] ?? '0', m[9] ?? '0'].map(Number) as number[];
  const leap = year! % 4 === 0 && (year! % 100 !== 0 || year! % 400 === 0);
  const daysInMonth = month === 2 ? (leap ? 29 : 28) : [4, 6, 9, 11].includes(month!) ? 30 : 31;
  if (month! < 1 || month! > 12) throw bad(` (there is no month ${month})`);
  if (day! < 1 || day! > daysInMonth) throw bad(` (${m[1]}-${m[2]} has ${daysInMonth} days)`);
  if (hour! > 23 || minute! > 59 || second! > 59) throw bad(' (the time of day does not exist)');
  if (offH! > 23 || offM! > 59) throw bad(' (the UTC offset does not exist)');
  if (Number.isNaN(Date.parse(v))) throw bad('');
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

/**
 * A decimal given as a JSON number or a numeric string, returned as a decimal string. Every
 * decimal of every route passes here, so each is held to the one amount bound of billing/money.ts
 * (AMOUNT_MAX_DIGITS before the point, AMOUNT_MAX_SCALE after): a 400 naming the field otherwise.
 */
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
  const d = dec(s);
  const problem = amountBoundProblem(d);
  if (problem) throw new ValidationError(field, `${problem}, got ${s}`);
  if (opts.min !== undefined && d.lt(opts.min)) throw new ValidationError(field, `must be >= ${opts.min}`);
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

/** An array of UUIDs (each checked, so PostgreSQL never sees a malformed one), lowercased. */
export function uuidArray(o: Obj, key: string, path = '', opts: { optional?: boolean; nonEmpty?: boolean } = {}): string[] | undefined {
  const ids = stringArray(o, key, path, opts);
  ids?.forEach((id, i) => { if (!UUID_RE.test(id)) throw new ValidationError(`${join(path, key)}[${i}]`, `must be a UUID, got ${JSON.stringify(id)}`); });
  return ids?.map((id) => id.toLowerCase());
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
