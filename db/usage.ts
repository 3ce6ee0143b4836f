import type { EntityManager } from '@mikro-orm/postgresql';
import type { BillableMetric } from './entities.js';
import { pgTextArray } from './sql.js';

/**
 * Hot-path usage SQL: a billable metric's aggregate for one customer over [from, to), straight
 * from PostgreSQL. Filters follow Metronome's semantics: event_type_filter in/not-in, and
 * property_filters (exists, in_values, not_in_values) that must all pass.
 */
const NUMERIC_RE = '^\\s*[+-]?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([eE][+-]?[0-9]+)?\\s*$';

export interface UsageWindow {
  /** Every id the customer's events may carry: its Accrue id and its ingest aliases. */
  customerKeys: string[];
  from: string;
  to: string;
}

export function metricWhere(metric: BillableMetric, w: UsageWindow): { sql: string; params: unknown[] } {
  const clauses = ['customer_id = any(?::text[])', 'ts >= ?', 'ts < ?'];
  const params: unknown[] = [pgTextArray(w.customerKeys), w.from, w.to];
  const etf = metric.eventTypeFilter;
  if (etf?.in_values?.length) {
    clauses.push('event_type = any(?::text[])');
    params.push(pgTextArray(etf.in_values));
  }
  if (etf?.not_in_values?.length) {
    clauses.push('not (event_type = any(?::text[]))');
    params.push(pgTextArray(etf.not_in_values));
  }
  for (const f of metric.propertyFilters ?? []) {
    if (f.exists === true) {
      clauses.push('jsonb_exists(properties, ?)');
      params.push(f.name);
    } else if (f.exists === false) {
      clauses.push('not jsonb_exists(properties, ?)');
      params.push(f.name);
    }
    if (f.in_values?.length) {
      clauses.push('(properties ->> ?) = any(?::text[])');
      params.push(f.name, pgTextArray(f.in_values));
    }
    if (f.not_in_values?.length) {
      clauses.push('((properties ->> ?) is null or not ((properties ->> ?) = any(?::text[])))');
      params.push(f.name, f.name, pgTextArray(f.not_in_values));
    }
  }
  return { sql: clauses.join(' and '), params };
}

/** The metric's quantity as an exact decimal string. */
export async function metricQuantity(em: EntityManager, metric: BillableMetric, w: UsageWindow): Promise<string> {
  const where = metricWhere(metric, w);
  let select: string;
  const params: unknown[] = [];
  if (metric.aggregationType === 'COUNT') {
    select = 'count(*)::numeric';
  } else {
    // Values that are not numbers do not count towards a SUM (ingest rejects them for SUM metrics).
    // The pattern travels as a parameter: MikroORM treats every `?` in the SQL text as a placeholder.
    select = `coalesce(sum(case when (properties ->> ?) ~ ? then (properties ->> ?)::numeric end), 0)`;
    params.push(metric.aggregationKey, NUMERIC_RE, metric.aggregationKey);
  }
  const rows = await em.execute<{ q: string }[]>(`select (${select})::text as q from event where ${where.sql}`, [...params, ...where.params]);
  return rows[0]?.q ?? '0';
}
