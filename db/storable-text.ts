declare global {
  interface String {
    /** ES2024; Node 20+ has it, the project's TypeScript lib (ES2023) does not list it yet. */
    isWellFormed(): boolean;
  }
}

const SUSPECT = /[\0\ud800-\udfff]/; // one scan; almost every string stops here

/**
 * Why PostgreSQL cannot store this string, if it cannot: `text` and `jsonb` hold no NUL character,
 * and `jsonb` refuses an unpaired UTF-16 surrogate (`text` would silently turn it into U+FFFD).
 * Such a string fails the whole statement it is in, so it is refused before it gets there.
 */
export function unstorableString(s: string): string | undefined {
  if (!SUSPECT.test(s)) return undefined;
  if (s.includes('\0')) return 'must not contain the NUL character (\\u0000)';
  if (!s.isWellFormed()) return 'must not contain an unpaired UTF-16 surrogate (\\ud800-\\udfff)';
  return undefined;
}

/** The first string (a key or a value) inside a JSON-shaped value that PostgreSQL cannot store: `[path, reason]`. */
export function firstUnstorable(value: unknown, path = ''): [string, string] | undefined {
  if (typeof value === 'string') {
    const why = unstorableString(value);
    return why ? [path, why] : undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  for (const [k, v] of Object.entries(value)) {
    const at = Array.isArray(value) ? `${path}[${k}]` : path ? `${path}.${k}` : k;
    const why = Array.isArray(value) ? undefined : unstorableString(k);
    if (why) return [at, `(the key) ${why}`];
    const found = firstUnstorable(v, at);
    if (found) return found;
  }
  return undefined;
}
