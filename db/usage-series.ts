import type { EntityManager } from '@mikro-orm/postgresql';
import type { BillableMetric } from './entities.js';
import { pgTextArray } from './sql.js';

/**
 * Usage over time from the hourly aggregates: one value per customer × window (× group), for
 * /v1/usage and /v1/usage/groups. Windows are HOUR, DAY (UTC days) or NONE (the whole range).
 */
export type WindowSize = 'HOUR' | 'DAY' | 'NONE';

export interface SeriesQuery {
  customerIds?: string[];
  from: string;
  to: string;
  window: WindowSize;
  /** Group by these keys of the metric's group values. */
  groupKeys?: string[];
  /** Keep only aggregates whose group value for a key is one of the listed values. */
  groupFilters?: Record<string, string[]>;
}

export interface SeriesRow {
  customerId: string;
  windowStart: string;
  group: Record<string, string | null> | null;
  /** Decimal string; null when nothing was measured (MAX, LATEST). */
  value: string | null;
}

export const WINDOW_MS: Record<Exclude<WindowSize, 'NONE'>, number> = { HOUR: 3_600_000, DAY: 86_400_000 };

export async function usageSeries(em: EntityManager, metric: BillableMetric, q: SeriesQuery): Promise<SeriesRow[]> {
  const bucket = q.window === 'NONE' ? '?::timestamptz' : q.window === 'DAY' ? `date_trunc('day', a.hour)` : 'a.hour';
  const bucketParams = q.window === 'NONE' ? [q.from] : [];
  const keys = q.groupKeys ?? [];
  const groupCols = keys.map((_, i) => `a.group_values ->> ? as g${i}`);
  const groupParams = [...keys];
  const where: string[] = ['a.metric_id = ?::uuid', 'a.hour >= ?', 'a.hour < ?'];
  const whereParams: unknown[] = [metric.id, q.from, q.to];
  if (q.customerIds) {
    where.push('a.customer_id::text = any(?::text[])');
    whereParams.push(pgTextArray(q.customerIds));
  }
  for (const [k, values] of Object.entries(q.groupFilters ?? {})) {
    if (!values.length) continue;
    where.push('(a.group_values ->> ?) = any(?::text[])');
    whereParams.push(k, pgTextArray(values));
  }
  const unique = metric.aggregationType === 'UNIQUE';
  const value = {
    COUNT: 'sum(a.event_count)',
    SUM: 'coalesce(sum(a.value_sum), 0)',
    MAX: 'max(a.value_max)',
    LATEST: '(array_agg(a.latest_value order by a.latest_ts desc, a.latest_tx desc) filter (where a.latest_ts is not null))[1]',
    UNIQUE: 'count(distinct a.value)',
  }[metric.aggregationType];
  const groupBy = ['a.customer_id', bucket, ...keys.map((_, i) => `g${i}`)];
  const sql = `select a.customer_id::text as customer_id, ${bucket} as window_start${groupCols.map((c) => `, ${c}`).join('')}, (${value})::text as value
                 from ${unique ? 'usage_unique_hourly' : 'usage_hourly'} a
                where ${where.join(' and ')}
                group by ${groupBy.map((g, i) => (i === 1 ? '2' : g)).join(', ')}
                order by 1, 2`;
  const rows = await em.execute<Record<string, string | Date | null>[]>(sql, [...bucketParams, ...groupParams, ...whereParams]);
  return rows.map((r) => ({
    customerId: String(r.customer_id),
    windowStart: new Date(r.window_start as Date).toISOString(),
    group: keys.length ? Object.fromEntries(keys.map((k, i) => [k, (r[`g${i}`] as string | null) ?? null])) : null,
    value: r.value as string | null,
  }));
}

/** The window starts covering [from, to). */
export function windowStarts(from: string, to: string, window: WindowSize): string[] {
  if (window === 'NONE') return [from];
  const out: string[] = [];
  for (let t = Date.parse(from); t < Date.parse(to); t += WINDOW_MS[window]) out.push(new Date(t).toISOString());
  return out;
}

/**
 * A metric's quantity for one customer over [from, to) (hour boundaries), for invoicing: the
 * whole range as one window, with "no events" as 0.
 */
export async function metricQuantity(em: EntityManager, metric: BillableMetric, w: { customerId: string; from: string; to: string }): Promise<string> {
  const [row] = await usageSeries(em, metric, { customerIds: [w.customerId], from: w.from, to: w.to, window: 'NONE' });
  return row?.value ?? '0';
}

/** One usage read for invoicing: a metric over [from, to), grouped by `groupKeys`. */
export interface UsagePart {
  metric: BillableMetric;
  from: string;
  to: string;
  groupKeys: string[];
}

export interface UsageGroup {
  group: Record<string, string | null>;
  /** Decimal string ("0" when nothing was measured). */
  value: string;
}

const VALUE_SQL: Record<BillableMetric['aggregationType'], string> = {
  COUNT: 'sum(a.event_count)',
  SUM: 'coalesce(sum(a.value_sum), 0)',
  MAX: 'max(a.value_max)',
  LATEST: '(array_agg(a.latest_value order by a.latest_ts desc, a.latest_tx desc) filter (where a.latest_ts is not null))[1]',
  UNIQUE: 'count(distinct a.value)',
};

/**
 * Many usage reads for one customer in a single round trip (an invoice of 50 products is one
 * query): part i's groups come back under index i.
 */
export async function usageParts(em: EntityManager, customerId: string, parts: readonly UsagePart[]): Promise<UsageGroup[][]> {
  const out: UsageGroup[][] = parts.map(() => []);
  if (!parts.length) return out;
  const selects: string[] = [];
  const params: unknown[] = [];
  parts.forEach((part, i) => {
    const table = part.metric.aggregationType === 'UNIQUE' ? 'usage_unique_hourly' : 'usage_hourly';
    const g = part.groupKeys.length ? `jsonb_build_object(${part.groupKeys.map(() => '?::text, a.group_values ->> ?').join(', ')})` : `'{}'::jsonb`;
    for (const k of part.groupKeys) params.push(k, k);
    selects.push(`(select ${i} as part, ${g} as g, (${VALUE_SQL[part.metric.aggregationType]})::text as value
                     from ${table} a
                    where a.metric_id = ?::uuid and a.customer_id = ?::uuid and a.hour >= ? and a.hour < ?
                    group by 2)`);
    params.push(part.metric.id, customerId, part.from, part.to);
  });
  const rows = await em.execute<{ part: number; g: Record<string, string | null>; value: string | null }[]>(selects.join(' union all '), params);
  for (const r of rows) {
    const g = typeof r.g === 'string' ? JSON.parse(r.g) as Record<string, string | null> : r.g;
    out[Number(r.part)]!.push({ group: g, value: r.value ?? '0' });
  }
  return out;
}
