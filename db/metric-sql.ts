import type { BillableMetric } from './entities.js';
import { pgTextArray } from './sql.js';

/**
 * How a billable metric reads an event, in SQL over `event e`. billing/metering/match.ts is the
 * same rule in TypeScript (ingest validation); tests hold the two to the same cases.
 *
 * - filters: event_type_filter in/not-in, and every property filter (exists, in_values,
 *   not_in_values) must pass; a property compared to values is compared as text.
 * - value: SUM, MAX and LATEST read aggregation_key as a decimal (a value that is not a number
 *   is rejected at ingest, and ignored here); a number out of Accrue's range (billing/money.ts
 *   isDecimalString, also rejected at ingest) stops the statement, so the rater quarantines the
 *   event instead of counting it with no value; UNIQUE reads it as text; COUNT needs none.
 * - group values: the union of the metric's group keys, as {key: text value or null}.
 */
export const NUMERIC_RE = '^\\s*[+-]?([0-9]{1,100}(\\.[0-9]{0,100})?|\\.[0-9]{1,100})([eE][+-]?[0-9]{1,3})?\\s*$';
/** Anything number-shaped, however long: matched but not NUMERIC_RE means out of range. */
const NUMBER_SHAPED_RE = '^\\s*[+-]?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([eE][+-]?[0-9]+)?\\s*$';

export interface Sql {
  sql: string;
  params: unknown[];
}

export function metricFilterSql(metric: BillableMetric): Sql {
  const clauses: string[] = [];
  const params: unknown[] = [];
  const etf = metric.eventTypeFilter;
  if (etf?.in_values?.length) {
    clauses.push('e.event_type = any(?::text[])');
    params.push(pgTextArray(etf.in_values));
  }
  if (etf?.not_in_values?.length) {
    clauses.push('not (e.event_type = any(?::text[]))');
    params.push(pgTextArray(etf.not_in_values));
  }
  for (const f of metric.propertyFilters ?? []) {
    if (f.exists === true) {
      clauses.push('jsonb_exists(e.properties, ?)');
      params.push(f.name);
    } else if (f.exists === false) {
      clauses.push('not jsonb_exists(e.properties, ?)');
      params.push(f.name);
    }
    if (f.in_values?.length) {
      clauses.push('(e.properties ->> ?) = any(?::text[])');
      params.push(f.name, pgTextArray(f.in_values));
    }
    if (f.not_in_values?.length) {
      clauses.push('((e.properties ->> ?) is null or not ((e.properties ->> ?) = any(?::text[])))');
      params.push(f.name, f.name, pgTextArray(f.not_in_values));
    }
  }
  return { sql: clauses.length ? clauses.join(' and ') : 'true', params };
}

export function metricGroupKeys(metric: BillableMetric): string[] {
  return [...new Set((metric.groupKeys ?? []).flat())].sort();
}

export function groupValuesSql(metric: BillableMetric): Sql {
  const keys = metricGroupKeys(metric);
  if (!keys.length) return { sql: `'{}'::jsonb`, params: [] };
  return { sql: `jsonb_build_object(${keys.map(() => '?::text, e.properties ->> ?').join(', ')})`, params: keys.flatMap((k) => [k, k]) };
}

export function valueSql(metric: BillableMetric): Sql {
  switch (metric.aggregationType) {
    case 'COUNT':
      return { sql: 'null::numeric', params: [] };
    case 'UNIQUE':
      return { sql: '(e.properties ->> ?)', params: [metric.aggregationKey] };
    default:
      // The second branch raises on purpose ("invalid input syntax for type numeric: out of range …").
      return {
        sql: `case when (e.properties ->> ?) ~ ? then (e.properties ->> ?)::numeric
                   when (e.properties ->> ?) ~ ? then ('out of range: ' || left(e.properties ->> ?, 40))::numeric end`,
        params: [metric.aggregationKey, NUMERIC_RE, metric.aggregationKey, metric.aggregationKey, NUMBER_SHAPED_RE, metric.aggregationKey],
      };
  }
}
