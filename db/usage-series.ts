import type { EntityManager } from '@mikro-orm/postgresql';
import type { BillableMetric } from './entities.js';
import { Dec } from '../billing/money.js';
import { pgTextArray } from './sql.js';
import type { Decimal } from 'decimal.js';

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

const DAY_MS = 86_400_000;
const iso = (ms: number) => new Date(ms).toISOString();

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
  metric: Pick<BillableMetric, 'id' | 'aggregationType'>;
  from: string;
  to: string;
  groupKeys: string[];
}

export interface UsageGroup {
  group: Record<string, string | null>;
  /** Decimal string ("0" when nothing was measured). */
  value: string;
}


/** Whole UTC days of [from, to) go to the daily rollup, the rest (partial days) to the hourly rows. */
function splitDays(fromIso: string, toIso: string): { d1: number; d2: number } | null {
  const d1 = Math.ceil(Date.parse(fromIso) / DAY_MS) * DAY_MS;
  const d2 = Math.floor(Date.parse(toIso) / DAY_MS) * DAY_MS;
  return d1 < d2 ? { d1, d2 } : null;
}

interface RawAgg { count: Decimal; sum: Decimal | null; max: Decimal | null; latestAt: string; latest: string | null }

/**
 * Usage reads for one customer's invoice. Decomposable aggregations (COUNT, SUM, MAX, LATEST)
 * over the same time range are read in one query grouped by metric and full group values, then
 * projected onto each product's group keys here; UNIQUE needs the distinct values, so each
 * UNIQUE read is its own subquery. Part i's groups come back under index i.
 */
export async function usageParts(em: EntityManager, customerId: string, parts: readonly UsagePart[]): Promise<UsageGroup[][]> {
  return (await usagePartsMany(em, [{ customerId, parts }]))[0]!;
}

/**
 * `usageParts` for several customers at once: decomposable reads over the same time range are one
 * query for all of them (grouped by customer too); UNIQUE reads stay per customer. Alert
 * evaluation reads a whole round of customers' drafts this way (`batchingUsageReader`).
 */
export async function usagePartsMany(em: EntityManager, requests: readonly { customerId: string; parts: readonly UsagePart[] }[]): Promise<UsageGroup[][][]> {
  const outs: UsageGroup[][][] = requests.map((r) => r.parts.map(() => []));
  const byRange = new Map<string, { req: number; i: number }[]>();
  requests.forEach((r, req) => r.parts.forEach((part, i) => {
    if (part.metric.aggregationType === 'UNIQUE') return;
    const k = `${part.from}|${part.to}`;
    (byRange.get(k) ?? byRange.set(k, []).get(k)!).push({ req, i });
  }));

  for (const [range, refs] of byRange) {
    const [from, to] = range.split('|') as [string, string];
    const metricIds = pgTextArray([...new Set(refs.map((x) => requests[x.req]!.parts[x.i]!.metric.id))]);
    const customerIds = pgTextArray([...new Set(refs.map((x) => requests[x.req]!.customerId))]);
    const cols = 'customer_id, metric_id, group_values, event_count, value_sum, value_max, latest_ts, latest_tx, latest_value';
    // Index-friendly ranges (metric_id = any(uuid[]) leads the primary key); empty edges are left out.
    const ranges: { table: string; col: string; lo: string; hi: string }[] = [];
    const days = splitDays(from, to);
    if (days) {
      ranges.push({ table: 'usage_daily', col: 'day', lo: iso(days.d1), hi: iso(days.d2) });
      if (Date.parse(from) < days.d1) ranges.push({ table: 'usage_hourly', col: 'hour', lo: from, hi: iso(days.d1) });
      if (days.d2 < Date.parse(to)) ranges.push({ table: 'usage_hourly', col: 'hour', lo: iso(days.d2), hi: to });
    } else ranges.push({ table: 'usage_hourly', col: 'hour', lo: from, hi: to });
    const source = ranges.map((r) => `select ${cols} from ${r.table} where metric_id = any(?::uuid[]) and customer_id = any(?::uuid[]) and ${r.col} >= ? and ${r.col} < ?`).join(' union all ');
    const params = ranges.flatMap((r) => [metricIds, customerIds, r.lo, r.hi]);
    const rows = await em.execute<{ customer_id: string; metric_id: string; g: unknown; n: string; s: string | null; m: string | null; lt: Date | null; ltx: string | null; lv: string | null }[]>(
      `select a.customer_id::text as customer_id, a.metric_id::text as metric_id, a.group_values as g, sum(a.event_count)::text as n, sum(a.value_sum)::text as s, max(a.value_max)::text as m,
              max(a.latest_ts) as lt,
              (array_agg(a.latest_tx order by a.latest_ts desc nulls last, a.latest_tx desc))[1] as ltx,
              (array_agg(a.latest_value order by a.latest_ts desc nulls last, a.latest_tx desc))[1]::text as lv
         from (${source}) a group by a.customer_id, a.metric_id, a.group_values`, params);
    const byMetric = new Map<string, typeof rows>();
    for (const r of rows) {
      const k = `${r.customer_id}|${r.metric_id}`;
      (byMetric.get(k) ?? byMetric.set(k, []).get(k)!).push(r);
    }
    for (const { req, i } of refs) {
      const part = requests[req]!.parts[i]!;
      const out = outs[req]!;
      const groups = new Map<string, { group: Record<string, string | null>; agg: RawAgg }>();
      for (const r of byMetric.get(`${requests[req]!.customerId}|${part.metric.id}`) ?? []) {
        const gv = (typeof r.g === 'string' ? JSON.parse(r.g) : r.g) as Record<string, string | null>;
        const group = Object.fromEntries(part.groupKeys.map((k) => [k, gv[k] ?? null]));
        const key = JSON.stringify(group);
        const cur = groups.get(key) ?? { group, agg: { count: new Dec(0), sum: null, max: null, latestAt: '', latest: null } };
        cur.agg.count = cur.agg.count.plus(r.n);
        if (r.s !== null) cur.agg.sum = (cur.agg.sum ?? new Dec(0)).plus(r.s);
        if (r.m !== null && (cur.agg.max === null || new Dec(r.m).gt(cur.agg.max))) cur.agg.max = new Dec(r.m);
        const at = r.lt ? `${new Date(r.lt).toISOString()}|${r.ltx}` : '';
        if (at && at > cur.agg.latestAt) { cur.agg.latestAt = at; cur.agg.latest = r.lv; }
        groups.set(key, cur);
      }
      if (!part.groupKeys.length && !groups.size) groups.set('{}', { group: {}, agg: { count: new Dec(0), sum: null, max: null, latestAt: '', latest: null } });
      for (const { group, agg } of groups.values()) {
        const value = {
          COUNT: agg.count.toString(),
          SUM: (agg.sum ?? new Dec(0)).toString(),
          MAX: agg.max?.toString() ?? '0',
          LATEST: agg.latest ?? '0',
          UNIQUE: '0',
        }[part.metric.aggregationType];
        out[i]!.push({ group, value });
      }
    }
  }

  for (const [req, r] of requests.entries()) {
    const uniques = r.parts.flatMap((p, i) => (p.metric.aggregationType === 'UNIQUE' ? [i] : []));
    if (uniques.length) await uniqueParts(em, r.customerId, r.parts, uniques, outs[req]!);
  }
  return outs;
}

/** UNIQUE reads of one customer: the distinct values, one subquery each, into `out` by part index. */
async function uniqueParts(em: EntityManager, customerId: string, parts: readonly UsagePart[], uniques: number[], out: UsageGroup[][]): Promise<void> {
  {
    const selects: string[] = [];
    const params: unknown[] = [];
    for (const i of uniques) {
      const part = parts[i]!;
      const g = part.groupKeys.length ? `jsonb_build_object(${part.groupKeys.map(() => '?::text, a.group_values ->> ?').join(', ')})` : `'{}'::jsonb`;
      for (const k of part.groupKeys) params.push(k, k);
      const days = splitDays(part.from, part.to);
      let source: string;
      if (days) {
        source = `select group_values, value from usage_unique_daily where metric_id = ?::uuid and customer_id = ?::uuid and day >= ? and day < ?
                  union all
                  select group_values, value from usage_unique_hourly where metric_id = ?::uuid and customer_id = ?::uuid and ((hour >= ? and hour < ?) or (hour >= ? and hour < ?))`;
        params.push(part.metric.id, customerId, iso(days.d1), iso(days.d2), part.metric.id, customerId, part.from, iso(days.d1), iso(days.d2), part.to);
      } else {
        source = 'select group_values, value from usage_unique_hourly where metric_id = ?::uuid and customer_id = ?::uuid and hour >= ? and hour < ?';
        params.push(part.metric.id, customerId, part.from, part.to);
      }
      selects.push(`(select ${i} as part, ${g} as g, count(distinct a.value)::text as value from (${source}) a group by 2)`);
    }
    const rows = await em.execute<{ part: number; g: unknown; value: string | null }[]>(selects.join(' union all '), params);
    for (const r of rows) {
      const g = (typeof r.g === 'string' ? JSON.parse(r.g) : r.g) as Record<string, string | null>;
      out[Number(r.part)]!.push({ group: g, value: r.value ?? '0' });
    }
    for (const i of uniques) if (!parts[i]!.groupKeys.length && !out[i]!.length) out[i]!.push({ group: {}, value: '0' });
  }
}

/**
 * A `usageParts` that batches: reads requested in the same turn of the event loop (several
 * customers' drafts computed side by side) go to PostgreSQL as one `usagePartsMany`.
 */
export function batchingUsageReader(): typeof usageParts {
  let queue: { em: EntityManager; customerId: string; parts: readonly UsagePart[]; resolve: (g: UsageGroup[][]) => void; reject: (e: unknown) => void }[] = [];
  return (em, customerId, parts) => new Promise((resolve, reject) => {
    queue.push({ em, customerId, parts, resolve, reject });
    if (queue.length > 1) return;
    setImmediate(() => {
      const batch = queue;
      queue = [];
      usagePartsMany(batch[0]!.em, batch).then((res) => batch.forEach((b, k) => b.resolve(res[k]!)), (err) => batch.forEach((b) => b.reject(err)));
    });
  });
}
