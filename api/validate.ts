import { amountBoundProblem, dec, isDecimalString } from '../billing/money.js';
import { ValidationError } from '../billing/errors.js';
import { UUID_RE } from '../db/ids.js';
import { unstorableString } from '../db/storable-text.js';

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

/** How deep a request body may nest (objects and arrays); the parser's own limit is the call stack. */
export const MAX_JSON_DEPTH = 32;
const MAX_REPORTED = 20;

/**
 * Every request body and query string passes here before a route sees it (api/app.ts), so every
 * string field of every route — event properties, their keys and nested values included — is
 * storable, and nothing nests deeper than MAX_JSON_DEPTH. One bad string rejects the request with
 * a 400 naming its path (`[3].properties.name`); `details` lists up to 20, with the index of the
 * top-level array item (the event) each is in.
 */
export function checkRequestStrings(root: unknown): void {
  const problems: { index?: number; field: string; message: string }[] = [];
  // The path is kept as a stack of keys and only spelled out for a problem: this runs on every
  // ingest request, and building a path string per value cost more than the checks.
  const keys: (string | number)[] = [];
  const pathOf = () => keys.reduce<string>((p, k) => (typeof k === 'number' ? `${p}[${k}]` : join(p, k)), '');
  const report = (why: string) => {
    if (problems.length >= MAX_REPORTED) return;
    const field = pathOf() || 'body';
    const index = typeof keys[0] === 'number' ? keys[0] : undefined;
    problems.push({ ...(index === undefined ? {} : { index }), field, message: `${field}: ${why}` });
  };
  const visit = (v: unknown, depth: number): void => {
    if (typeof v === 'string') {
      const why = unstorableString(v);
      if (why) report(why);
      return;
    }
    if (typeof v !== 'object' || v === null) return;
    if (depth >= MAX_JSON_DEPTH) throw new ValidationError('body', `is nested deeper than ${MAX_JSON_DEPTH} levels (at ${pathOf()})`);
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        keys.push(i);
        visit(v[i], depth + 1);
        keys.pop();
      }
      return;
    }
    for (const k in v) {
      if (!Object.hasOwn(v, k)) continue;
      keys.push(k);
      const why = unstorableString(k);
      if (why) report(`(the key) ${why}`);
      visit((v as Obj)[k], depth + 1);
      keys.pop();
    }
  };
  visit(root, 0);
  if (problems.length) {
    const first = problems[0]!;
    const more = problems.length > 1 ? ` (${problems.length}${problems.length === MAX_REPORTED ? ' or more' : ''} strings in all, listed in details)` : '';
    throw new ValidationError(first.field, `${first.message.slice(first.field.length + 2)}${more}`, problems);
  }
}

/**
 * The nesting limit of checkRequestStrings alone, for a body whose strings need no check
 * (api/app.ts: no escape in it can produce an unstorable string); too deep → the same error.
 */
export function checkJsonDepth(root: unknown): void {
  const tooDeep = (v: unknown, depth: number): boolean => {
    if (typeof v !== 'object' || v === null) return false;
    if (depth >= MAX_JSON_DEPTH) return true;
    if (Array.isArray(v)) return v.some((x) => tooDeep(x, depth + 1));
    for (const k in v) if (Object.hasOwn(v, k) && tooDeep((v as Obj)[k], depth + 1)) return true;
    return false;
  };
  if (tooDeep(root, 0)) checkRequestStrings(root);
}
