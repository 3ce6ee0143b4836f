import { ValidationError } from '../billing/errors.js';
import { unstorableString } from '../db/storable-text.js';
import type { Obj } from '../operations/input/validate.js';

/**
 * What every request body must be, checked by app.ts before any route: nested at most
 * MAX_JSON_DEPTH levels, and every string (keys included) storable in PostgreSQL.
 */

const join = (path: string, key: string) => (path ? `${path}.${key}` : key);

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
