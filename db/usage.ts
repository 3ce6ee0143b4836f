import type { EntityManager } from '@mikro-orm/postgresql';
import type { BillableMetric } from './entities.js';

/**
 * Usage read from the hourly aggregates (never from raw events): a metric's value for one
 * customer over [from, to), both on hour boundaries. COUNT and SUM add up, MAX takes the largest,
 * LATEST the value of the newest event, UNIQUE counts distinct values across the whole window.
 * `groupFilter` keeps only aggregates whose group values equal the given ones.
 */
export interface UsageWindow {
  customerId: string;
  from: string;
  to: string;
  groupFilter?: Record<string, string>;
}

export function assertHourAligned(iso: string, field: string): void {
  if (Date.parse(iso) % 3_600_000 !== 0) throw new RangeError(`${field} must be on an hour boundary (UTC): ${iso}`);
}

/** The value as a decimal string, or null when no event matched (MAX, LATEST; COUNT/SUM give 0). */
export async function metricValue(em: EntityManager, metric: BillableMetric, w: UsageWindow): Promise<string | null> {
  const params: unknown[] = [metric.id, w.customerId, w.from, w.to];
  let groupSql = '';
  if (w.groupFilter && Object.keys(w.groupFilter).length) {
    groupSql = ' and group_values @> ?::jsonb';
    params.push(JSON.stringify(w.groupFilter));
  }
  const where = `metric_id = ?::uuid and customer_id = ?::uuid and hour >= ? and hour < ?${groupSql}`;
  let select: string;
  switch (metric.aggregationType) {
    case 'COUNT': select = `select coalesce(sum(event_count), 0)::text as v from usage_hourly where ${where}`; break;
    case 'SUM': select = `select coalesce(sum(value_sum), 0)::text as v from usage_hourly where ${where}`; break;
    case 'MAX': select = `select max(value_max)::text as v from usage_hourly where ${where}`; break;
    case 'LATEST': select = `select latest_value::text as v from usage_hourly where ${where} and latest_ts is not null order by latest_ts desc, latest_tx desc limit 1`; break;
    case 'UNIQUE': select = `select count(distinct value)::text as v from usage_unique_hourly where ${where}`; break;
  }
  const rows = await em.execute<{ v: string | null }[]>(select, params);
  return rows[0]?.v ?? null;
}

/** The metric's quantity for invoicing: its value, with "no events" as 0. */
export async function metricQuantity(em: EntityManager, metric: BillableMetric, w: UsageWindow): Promise<string> {
  return (await metricValue(em, metric, w)) ?? '0';
}
