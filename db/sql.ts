/**
 * A PostgreSQL array literal for a text[] parameter (`?::text[]`). MikroORM expands JS arrays
 * bound to `?` into value lists, so arrays travel as one literal string instead.
 */
export function pgTextArray(values: readonly string[]): string {
  return `{${values.map((v) => `"${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`).join(',')}}`;
}
