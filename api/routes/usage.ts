import { Router } from 'express';
import type { MikroORM } from '@mikro-orm/postgresql';
import { ValidationError } from '../../billing/errors.js';
import { matchesMetric } from '../../billing/metering/match.js';
import { BillableMetric, Customer } from '../../db/entities.js';
import { findCustomer } from '../../db/customers.js';
import { UUID_RE } from '../../db/ids.js';
import { EVENTS_BY_ID_SQL } from '../../db/events.js';
import { pgTextArray } from '../../db/sql.js';
import { usageSeries, windowStarts, WINDOW_MS, type SeriesRow, type WindowSize } from '../../db/usage-series.js';
import { allow } from '../auth.js';
import type { MetricsCache } from '../metrics-cache.js';
import { findMetric, metricJson } from '../views/metrics.js';
import { MAX_DUPLICATES_SHOWN } from '../limits.js';
import { objectAt, oneOf, reqTimestamp, reqUuid, str, stringArray, timestamp, type Obj } from '../../operations/input/validate.js';

const WINDOWS: readonly WindowSize[] = ['HOUR', 'DAY', 'NONE'];
const MAX_WINDOWS = 2000;

/**
 * A usage value exactly as PostgreSQL summed it, as a JSON number: JSON.rawJSON writes the
 * decimal's own digits (a JS number would round past 2^53 and turn 1e400 into null).
 */
const rawJSON = (JSON as unknown as { rawJSON(text: string): unknown }).rawJSON;
const num = (v: string | null): unknown => (v === null ? null : rawJSON(v));
/** What "no events" reads as: 0 for counts and sums, null (no value) for MAX and LATEST. */
const empty = (m: BillableMetric) => (m.aggregationType === 'MAX' || m.aggregationType === 'LATEST' ? null : '0');

function range(body: Obj, window: WindowSize, required: boolean): { from: string; to: string } | undefined {
  const from = required ? reqTimestamp(body, 'starting_on') : timestamp(body, 'starting_on', '', { optional: true });
  const to = required ? reqTimestamp(body, 'ending_before') : timestamp(body, 'ending_before', '', { optional: true });
  if (!from || !to) {
    if (from || to) throw new ValidationError(from ? 'ending_before' : 'starting_on', 'is required with the other end of the range');
    return undefined;
  }
  if (Date.parse(to) <= Date.parse(from)) throw new ValidationError('ending_before', 'must be after starting_on');
  const grain = window === 'DAY' ? WINDOW_MS.DAY : WINDOW_MS.HOUR;
  for (const [field, v] of [['starting_on', from], ['ending_before', to]] as const) {
    if (Date.parse(v) % grain !== 0) throw new ValidationError(field, `must be on a ${window === 'DAY' ? 'UTC day' : 'UTC hour'} boundary for window_size ${window}, got ${v}`);
  }
  if (window !== 'NONE' && (Date.parse(to) - Date.parse(from)) / WINDOW_MS[window] > MAX_WINDOWS) {
    throw new ValidationError('ending_before', `the range holds more than ${MAX_WINDOWS} ${window} windows; narrow it or use a larger window_size`);
  }
  return { from, to };
}

const key = (r: { customerId: string; windowStart: string }) => `${r.customerId}|${r.windowStart}`;

export function usageRouter(orm: MikroORM, metrics: MetricsCache): Router {
  const r = Router();

  // v1.usage.list: per customer × metric × window, read from the hourly aggregates.
  r.post('/v1/usage', allow('read', 'finance'), async (req, res) => {
    const body = objectAt(req.body, '', ['starting_on', 'ending_before', 'window_size', 'customer_ids', 'billable_metrics']);
    const window = oneOf(body, 'window_size', WINDOWS)!;
    const { from, to } = range(body, window, true)!;
    const customerIds = stringArray(body, 'customer_ids', '', { optional: true });
    customerIds?.forEach((id, i) => { if (!UUID_RE.test(id)) throw new ValidationError(`customer_ids[${i}]`, 'must be a UUID'); });
    let requested: { metric: BillableMetric; groupBy?: { key: string; values?: string[] } }[];
    if (body.billable_metrics !== undefined) {
      if (!Array.isArray(body.billable_metrics)) throw new ValidationError('billable_metrics', 'must be an array');
      requested = [];
      for (const [i, item] of (body.billable_metrics as unknown[]).entries()) {
        const path = `billable_metrics[${i}]`;
        const o = objectAt(item, path, ['id', 'group_by']);
        const metric = await findMetric(orm, reqUuid(o, 'id', path), `${path}.id`);
        let groupBy: { key: string; values?: string[] } | undefined;
        if (o.group_by !== undefined && o.group_by !== null) {
          const g = objectAt(o.group_by, `${path}.group_by`, ['key', 'values']);
          groupBy = { key: str(g, 'key', `${path}.group_by`)!, values: stringArray(g, 'values', `${path}.group_by`, { optional: true }) };
          if (!metric.groupKeys.flat().includes(groupBy.key)) throw new ValidationError(`${path}.group_by.key`, `is not a group key of billable metric ${metric.name}`);
        }
        requested.push({ metric, groupBy });
      }
    } else {
      requested = (await metrics.get()).map((metric) => ({ metric }));
    }
    const em = orm.em.fork();
    const data: unknown[] = [];
    const starts = windowStarts(from, to, window);
    for (const { metric, groupBy } of requested) {
      const totals = await usageSeries(em, metric, { customerIds, from, to, window });
      const grouped = groupBy ? await usageSeries(em, metric, { customerIds, from, to, window, groupKeys: [groupBy.key], groupFilters: groupBy.values ? { [groupBy.key]: groupBy.values } : undefined }) : [];
      const byWindow = new Map(totals.map((t) => [key(t), t.value]));
      const groupsByWindow = new Map<string, SeriesRow[]>();
      for (const g of grouped) groupsByWindow.set(key(g), [...(groupsByWindow.get(key(g)) ?? []), g]);
      const customers = customerIds ?? [...new Set(totals.map((t) => t.customerId))].sort();
      for (const customerId of customers) {
        for (const start of starts) {
          const k = `${customerId}|${start}`;
          const row: Record<string, unknown> = {
            customer_id: customerId,
            billable_metric_id: metric.id,
            billable_metric_name: metric.name,
            start_timestamp: start,
            end_timestamp: window === 'NONE' ? to : new Date(Date.parse(start) + WINDOW_MS[window]).toISOString(),
            value: num(byWindow.get(k) ?? empty(metric)),
          };
          if (groupBy) {
            const groups: Record<string, unknown> = {};
            for (const v of groupBy.values ?? []) groups[v] = null;
            for (const g of groupsByWindow.get(k) ?? []) groups[g.group![groupBy.key] ?? 'null'] = num(g.value);
            row.groups = groups;
          }
          data.push(row);
        }
      }
    }
    res.json({ data, next_page: null });
  });

  // v1.usage.listWithGroups: one customer and metric, grouped by a (compound) group key.
  r.post('/v1/usage/groups', allow('read', 'finance'), async (req, res) => {
    const body = objectAt(req.body, '', ['billable_metric_id', 'customer_id', 'window_size', 'starting_on', 'ending_before', 'group_by', 'group_key', 'group_filters', 'current_period']);
    if (body.current_period !== undefined) throw new ValidationError('current_period', 'is not supported yet; give starting_on and ending_before');
    const metric = await findMetric(orm, reqUuid(body, 'billable_metric_id'), 'billable_metric_id');
    const customer = await findCustomer(orm.em.fork(), reqUuid(body, 'customer_id'));
    const window = oneOf(body, 'window_size', WINDOWS)!;
    const { from, to } = range(body, window, true)!;
    if (body.group_by !== undefined && body.group_key !== undefined) throw new ValidationError('group_by', 'cannot be used together with group_key');
    let groupKeys: string[] = [];
    let filters: Record<string, string[]> | undefined;
    if (body.group_by !== undefined) {
      const g = objectAt(body.group_by, 'group_by', ['key', 'values']);
      groupKeys = [str(g, 'key', 'group_by')!];
      const values = stringArray(g, 'values', 'group_by', { optional: true });
      if (values) filters = { [groupKeys[0]!]: values };
    } else if (body.group_key !== undefined) {
      groupKeys = stringArray(body, 'group_key', '', { nonEmpty: true })!;
      if (!metric.groupKeys.some((gk) => gk.length === groupKeys.length && gk.every((k) => groupKeys.includes(k)))) {
        throw new ValidationError('group_key', `must be one of billable metric ${metric.name}'s group keys: ${JSON.stringify(metric.groupKeys)}`);
      }
    }
    if (body.group_filters !== undefined) {
      const f = objectAt(body.group_filters, 'group_filters', groupKeys);
      filters = Object.fromEntries(Object.keys(f).map((k) => [k, stringArray(f, k, 'group_filters')!]));
    }
    const rows = await usageSeries(orm.em.fork(), metric, { customerIds: [customer.id], from, to, window, groupKeys, groupFilters: filters });
    const data = rows.map((row) => ({
      starting_on: row.windowStart,
      ending_before: window === 'NONE' ? to : new Date(Date.parse(row.windowStart) + WINDOW_MS[window]).toISOString(),
      group_key: groupKeys.length === 1 ? groupKeys[0] : null,
      group_value: groupKeys.length === 1 ? (row.group?.[groupKeys[0]!] ?? null) : null,
      group: row.group ?? {},
      value: num(row.value),
    }));
    res.json({ data, next_page: null });
  });

  // v1.usage.search: events by transaction id, with their matched customer and metrics.
  r.post('/v1/events/search', allow('read', 'finance'), async (req, res) => {
    const body = objectAt(req.body, '', ['transactionIds']);
    const ids = stringArray(body, 'transactionIds', '', { nonEmpty: true })!;
    if (ids.length > 100) throw new ValidationError('transactionIds', 'must hold at most 100 ids');
    const em = orm.em.fork();
    const rows = await em.execute<{ transaction_id: string; customer_id: string; event_type: string; ts: Date; props: string; matched: string | null; rated: boolean; duplicates: string }[]>(
      `select e.transaction_id, e.customer_id, e.event_type, e.ts, e.properties::text as props,
              (select k.customer_id::text from customer_event_key k where k.key = e.customer_id limit 1) as matched,
              (e.xid < (select xid from rating_cursor where id = 'events')
                 and not exists (select 1 from event_unmatched u where u.transaction_id = e.transaction_id)) as rated,
              (select count(*)::text from event_duplicate d where d.transaction_id = e.transaction_id) as duplicates
         from event e where ${EVENTS_BY_ID_SQL}`, [pgTextArray(ids), pgTextArray(ids)]);
    // Accrue: duplicates whose payload differs from the stored event's (a reused transaction_id, not a retry).
    const conflicting = new Map((await em.execute<{ transaction_id: string; n: string }[]>(
      `select d.transaction_id, count(*)::text as n from event_duplicate d join event e using (transaction_id)
        where d.transaction_id = any(?::text[]) and ${EVENTS_BY_ID_SQL} and d.payload_hash <> event_payload_hash(e.customer_id, e.event_type, e.ts, e.properties)
        group by d.transaction_id`, [pgTextArray(ids), pgTextArray(ids), pgTextArray(ids)])).map((c) => [c.transaction_id, Number(c.n)]));
    const customers = new Map((await em.find(Customer, { id: { $in: rows.map((r) => r.matched).filter((x): x is string => !!x) } })).map((c) => [c.id, c]));
    const active = await metrics.get();
    const data: Record<string, unknown>[] = rows.flatMap((row) => {
      const properties = JSON.parse(row.props) as Record<string, unknown>;
      const matchedCustomer = row.matched ? customers.get(row.matched) : undefined;
      const event = {
        id: row.transaction_id,
        transaction_id: row.transaction_id,
        customer_id: row.customer_id,
        event_type: row.event_type,
        timestamp: new Date(row.ts).toISOString(),
        properties,
        is_duplicate: false,
        ...(matchedCustomer ? { matched_customer: { id: matchedCustomer.id, name: matchedCustomer.name } } : {}),
        matched_billable_metrics: matchedCustomer
          ? active.filter((m) => matchesMetric(m, { eventType: row.event_type, properties })).map(metricJson)
          : [],
        rated: row.rated, // Accrue: whether the event is in the usage aggregates yet
        conflicting_duplicates: conflicting.get(row.transaction_id) ?? 0, // Accrue: later submissions with a different payload
      };
      // Each later submission of the same transaction_id, accepted and not counted (at most
      // MAX_DUPLICATES_SHOWN per event: a client retrying one id forever must not grow the answer).
      return [event, ...Array.from({ length: Math.min(Number(row.duplicates), MAX_DUPLICATES_SHOWN) }, () => ({ ...event, is_duplicate: true }))];
    });
    // Accrue: events the rater could not aggregate (db/quarantine.ts), with why. One moved out of
    // rating (no billable metric) is its own entry, counted nowhere; one that only a metric's
    // backfill skipped is noted on the event, which the other metrics count.
    const quarantined = await em.execute<{ transaction_id: string; metric_id: string | null; customer_id: string; event_type: string; ts: Date; props: string; reason: string; at: Date }[]>(
      `select transaction_id, metric_id, customer_id, event_type, ts, properties::text as props, reason, quarantined_at as at
         from event_quarantine where transaction_id = any(?::text[]) order by quarantined_at`, [pgTextArray(ids)]);
    for (const q of quarantined) {
      const note = { billable_metric_id: q.metric_id, reason: q.reason, quarantined_at: new Date(q.at).toISOString() };
      if (q.metric_id) {
        for (const e of data) if (e.transaction_id === q.transaction_id) e.quarantined = [...((e.quarantined as unknown[] | undefined) ?? []), note];
        continue;
      }
      data.push({
        id: q.transaction_id, transaction_id: q.transaction_id, customer_id: q.customer_id, event_type: q.event_type,
        timestamp: new Date(q.ts).toISOString(), properties: JSON.parse(q.props) as Record<string, unknown>,
        is_duplicate: false, matched_billable_metrics: [], rated: false, quarantined: [note],
      });
    }
    res.json(data);
  });

  return r;
}
