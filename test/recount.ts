import type { EntityManager } from '@mikro-orm/postgresql';
import { Dec } from '../billing/money.js';
import { aggregationValue, groupValues, matchesMetric, type MetricRule } from '../billing/metering/match.js';

/**
 * Invariant I1's referee: recounts usage per metric × customer × hour × group values from the
 * raw events in TypeScript (billing/metering/match.ts), independently of the SQL rater, and
 * compares it with usage_hourly / usage_unique_hourly row by row.
 */
interface Row { count: number; sum: string | null; max: string | null; latest: string | null; uniques: string[] }

function exactJson(text: string): Record<string, unknown> {
  return JSON.parse(text, function (this: unknown, _k: string, v: unknown, ctx?: { source?: string }) {
    return typeof v === 'number' && ctx?.source !== undefined ? ctx.source : v;
  } as (k: string, v: unknown) => unknown);
}

export async function recount(em: EntityManager, metric: MetricRule & { id: string }): Promise<Map<string, Row>> {
  const keys = new Map((await em.execute<{ key: string; customer_id: string }[]>('select key, customer_id from customer_event_key')).map((k) => [k.key, k.customer_id]));
  const events = await em.execute<{ transaction_id: string; customer_id: string; event_type: string; ts: Date; props: string }[]>(
    'select transaction_id, customer_id, event_type, ts, properties::text as props from event');
  // Events quarantined for this metric alone (its backfill could not aggregate them) are not its to count.
  const skipped = new Set((await em.execute<{ transaction_id: string }[]>('select transaction_id from event_quarantine where metric_id = ?', [metric.id])).map((q) => q.transaction_id));
  const out = new Map<string, Row & { latestAt?: [number, string] }>();
  for (const e of events) {
    if (skipped.has(e.transaction_id)) continue;
    const customer = keys.get(e.customer_id);
    const ev = { eventType: e.event_type, properties: exactJson(e.props) };
    if (!customer || !matchesMetric(metric, ev)) continue;
    const hour = new Date(Math.floor(new Date(e.ts).getTime() / 3_600_000) * 3_600_000).toISOString();
    const key = `${customer}|${hour}|${JSON.stringify(groupValues(metric, ev))}`;
    const row = out.get(key) ?? { count: 0, sum: null, max: null, latest: null, uniques: [] };
    row.count++;
    const v = aggregationValue(metric, ev);
    if (v !== null) {
      if (metric.aggregationType === 'UNIQUE') {
        if (!row.uniques.includes(v)) row.uniques.push(v);
      } else {
        row.sum = new Dec(row.sum ?? 0).plus(v).toString();
        row.max = row.max === null || new Dec(v).gt(row.max) ? new Dec(v).toString() : row.max;
        const at: [number, string] = [new Date(e.ts).getTime(), e.transaction_id];
        if (!row.latestAt || at[0] > row.latestAt[0] || (at[0] === row.latestAt[0] && at[1] > row.latestAt[1])) {
          row.latestAt = at;
          row.latest = new Dec(v).toString();
        }
      }
    }
    out.set(key, row);
  }
  for (const row of out.values()) {
    delete row.latestAt;
    row.uniques.sort();
    // Each aggregation keeps only its own column.
    if (metric.aggregationType !== 'SUM') row.sum = null;
    if (metric.aggregationType !== 'MAX') row.max = null;
    if (metric.aggregationType !== 'LATEST') row.latest = null;
  }
  return out;
}

/** The aggregates as the rater left them, in recount's shape. */
export async function aggregates(em: EntityManager, metric: { id: string; aggregationType: string }): Promise<Map<string, Row>> {
  const rows = await em.execute<{ customer_id: string; hour: Date; gv: string; event_count: string; value_sum: string | null; value_max: string | null; latest_value: string | null }[]>(
    `select customer_id, hour, group_values::text as gv, event_count::text, value_sum::text, value_max::text, latest_value::text
       from usage_hourly where metric_id = ?`, [metric.id]);
  const uniques = await em.execute<{ customer_id: string; hour: Date; gv: string; value: string }[]>(
    'select customer_id, hour, group_values::text as gv, value from usage_unique_hourly where metric_id = ?', [metric.id]);
  const norm = (gv: string) => JSON.stringify(Object.fromEntries(Object.entries(JSON.parse(gv) as Record<string, unknown>).sort(([a], [b]) => a.localeCompare(b))));
  const out = new Map<string, Row>();
  for (const r of rows) {
    out.set(`${r.customer_id}|${new Date(r.hour).toISOString()}|${norm(r.gv)}`, {
      count: Number(r.event_count),
      sum: r.value_sum !== null ? new Dec(r.value_sum).toString() : null,
      max: r.value_max !== null ? new Dec(r.value_max).toString() : null,
      latest: r.latest_value !== null ? new Dec(r.latest_value).toString() : null,
      uniques: [],
    });
  }
  for (const u of uniques) out.get(`${u.customer_id}|${new Date(u.hour).toISOString()}|${norm(u.gv)}`)?.uniques.push(u.value);
  for (const row of out.values()) row.uniques.sort();
  return out;
}

export async function expectAggregatesMatchRecount(em: EntityManager, metric: MetricRule & { id: string }): Promise<number> {
  const [want, got] = await Promise.all([recount(em.fork(), metric), aggregates(em.fork(), metric)]);
  expect(Object.fromEntries([...got].sort())).toEqual(Object.fromEntries([...want].sort()));
  await expectDailyRollupOfHourly(em.fork(), metric);
  return want.size;
}

/** usage_daily / usage_unique_daily equal the hourly aggregates rolled up to UTC days, in TypeScript. */
export async function expectDailyRollupOfHourly(em: EntityManager, metric: { id: string }): Promise<void> {
  type H = { customer_id: string; t: Date; gv: string; event_count: string; value_sum: string | null; value_max: string | null; latest_ts: Date | null; latest_tx: string | null; latest_value: string | null };
  const hourly = await em.execute<H[]>(
    `select customer_id, hour as t, group_values::text as gv, event_count::text, value_sum::text, value_max::text, latest_ts, latest_tx, latest_value::text from usage_hourly where metric_id = ?`, [metric.id]);
  const daily = await em.execute<H[]>(
    `select customer_id, day as t, group_values::text as gv, event_count::text, value_sum::text, value_max::text, latest_ts, latest_tx, latest_value::text from usage_daily where metric_id = ?`, [metric.id]);
  const want = new Map<string, { count: bigint; sum: string | null; max: string | null; latestAt: string; latest: string | null }>();
  for (const h of hourly) {
    const day = new Date(h.t);
    day.setUTCHours(0, 0, 0, 0);
    const key = `${h.customer_id}|${day.toISOString()}|${h.gv}`;
    const w = want.get(key) ?? { count: 0n, sum: null, max: null, latestAt: '', latest: null };
    w.count += BigInt(h.event_count);
    if (h.value_sum !== null) w.sum = new Dec(w.sum ?? 0).plus(h.value_sum).toString();
    if (h.value_max !== null) w.max = w.max === null || new Dec(h.value_max).gt(w.max) ? new Dec(h.value_max).toString() : w.max;
    const at = h.latest_ts ? `${new Date(h.latest_ts).toISOString()}|${h.latest_tx}` : '';
    if (at > w.latestAt) { w.latestAt = at; w.latest = h.latest_value === null ? null : new Dec(h.latest_value).toString(); }
    want.set(key, w);
  }
  const got = new Map(daily.map((d) => [`${d.customer_id}|${new Date(d.t).toISOString()}|${d.gv}`, {
    count: BigInt(d.event_count), sum: d.value_sum === null ? null : new Dec(d.value_sum).toString(), max: d.value_max === null ? null : new Dec(d.value_max).toString(),
    latestAt: d.latest_ts ? `${new Date(d.latest_ts).toISOString()}|${d.latest_tx}` : '', latest: d.latest_value === null ? null : new Dec(d.latest_value).toString(),
  }]));
  expect(Object.fromEntries([...got].sort())).toEqual(Object.fromEntries([...want].sort()));
  const [uh] = await em.execute<{ n: string }[]>(`select count(*)::text as n from (select distinct customer_id, date_trunc('day', hour, 'UTC'), group_values, value from usage_unique_hourly where metric_id = ?) x`, [metric.id]);
  const [ud] = await em.execute<{ n: string }[]>('select count(*)::text as n from usage_unique_daily where metric_id = ?', [metric.id]);
  expect(ud!.n).toBe(uh!.n);
}
