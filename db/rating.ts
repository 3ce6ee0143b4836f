import { IsolationLevel } from '@mikro-orm/core';
import type { EntityManager } from '@mikro-orm/postgresql';
import type { BillableMetric } from './entities.js';
import { EVENTS_BY_ID_SQL } from './events.js';
import { groupValuesSql, metricFilterSql, metricGroupKeys, valueSql, type Sql } from './metric-sql.js';
import { isEventDataError, quarantinePoisonEvents } from './quarantine.js';
import { pgTextArray } from './sql.js';
import { OUTBOUND_CHANNEL } from './wakeup.js';

/**
 * The rater: moves events into usage aggregates exactly once (invariant I1).
 *
 * Events are taken in order of the id of the transaction that inserted them (`xid`), and only
 * below pg_snapshot_xmin — the oldest transaction still running — so every event below the
 * cursor has committed and none can appear there later. Aggregates and the cursor change in the
 * same transaction: a pass that fails or is killed leaves nothing, a pass that committed is never
 * repeated. Every writer of aggregates (and metric creation) runs through `asRatingWriter`: they
 * take turns, and each sees one snapshot taken after its turn began.
 */
export interface RatePassResult {
  events: number;
  rematched: number;
  cursor: string;
  /** Events moved to event_quarantine because aggregating them failed (db/quarantine.ts). */
  quarantined: number;
}

const big = (x: string) => BigInt(x);

/**
 * Marks the customers of the events a pass rated for alert evaluation (db/alerts.ts), in the
 * pass's own transaction: their aggregates and the mark commit together. Only while some alert is
 * enabled, some contract has a trial spending cap (its usage moves entitlements) or recharges its
 * prepaid balance or bills a spend threshold (db/recharge.ts). Inserts only: nothing here conflicts with the evaluator removing older marks.
 * Wakes the outbound loop (db/wakeup.ts) when it marked anyone.
 */
const MARK_ALERT_CUSTOMERS_SQL = `
  with marked as (
    insert into alert_dirty (customer_id)
    select distinct k.customer_id from event e join customer_event_key k on k.key = e.customer_id
    where $WHERE and (exists (select 1 from alert where status = 'enabled')
                     or exists (select 1 from contract where archived_at is null and terms -> 'trial_spec' -> 'spending_cap' is not null)
                     or exists (select 1 from contract where archived_at is null and ((terms -> 'prepaid_balance_threshold_configuration' ->> 'is_enabled')::boolean
                                                                                  or (terms -> 'spend_threshold_configuration' ->> 'is_enabled')::boolean)))
    returning 1)
  select pg_notify('${OUTBOUND_CHANNEL}', '') from (select 1 from marked limit 1) m`;
const maxXid = (a: string, b: string) => (big(a) > big(b) ? a : b);

/** Adds the events selected by `source` (a condition on `e`) to one metric's aggregates. */
export async function aggregateMetric(em: EntityManager, metric: BillableMetric, source: Sql): Promise<void> {
  const filter = metricFilterSql(metric);
  const gv = groupValuesSql(metric);
  const keys = metricGroupKeys(metric);
  const unique = metric.aggregationType === 'UNIQUE';
  // usage_hourly takes a numeric value (none for COUNT and UNIQUE); UNIQUE's text values go to usage_unique_hourly.
  const numeric: Sql = unique ? { sql: 'null::numeric', params: [] } : valueSql(metric);
  // Group values travel as text columns g0..gn (grouping by text is cheaper than by a jsonb built
  // per event); the {key: value} object is built once per group.
  const groupCols = keys.map((_, i) => `g${i}`);
  const events = (v: Sql, withGv: boolean): Sql => ({
    sql: `select e.transaction_id, e.ts, e.customer_id, ${v.sql} as v, ${withGv ? `${gv.sql} as gv` : keys.map((_, i) => `e.properties ->> ? as g${i}`).join(', ') || 'null as g_'}
            from event e where (${source.sql}) and (${filter.sql})`,
    params: [...v.params, ...(withGv ? gv.params : keys), ...source.params, ...filter.params],
  });
  const gvOfGroup: Sql = keys.length
    ? { sql: `jsonb_build_object(${keys.map((_, i) => `?::text, x.g${i}`).join(', ')})`, params: keys }
    : { sql: `'{}'::jsonb`, params: [] };
  const rows = events(numeric, false);
  // Only the columns this aggregation reads: the newest-event columns cost a sort per group.
  const none = { value_sum: 'null::numeric', value_max: 'null::numeric', latest_ts: 'null::timestamptz', latest_tx: 'null::text', latest_value: 'null::numeric' };
  const chosen = {
    COUNT: none,
    UNIQUE: none,
    SUM: { ...none, value_sum: 'sum(x.v)' },
    MAX: { ...none, value_max: 'max(x.v)' },
    LATEST: {
      ...none,
      latest_ts: 'max(x.ts) filter (where x.v is not null)',
      latest_tx: '(array_agg(x.transaction_id order by x.ts desc, x.transaction_id desc) filter (where x.v is not null))[1]',
      latest_value: '(array_agg(x.v order by x.ts desc, x.transaction_id desc) filter (where x.v is not null))[1]',
    },
  }[metric.aggregationType];
  const columns = Object.entries(chosen).map(([name, expr]) => `${expr} as ${name}`).join(', ');
  // One statement: the slice's events grouped by hour (one scan of the events), upserted into
  // usage_hourly and rolled up into usage_daily (UTC days).
  const newer = (t: string) => `(excluded.latest_ts is not null and (${t}.latest_ts is null or (excluded.latest_ts, excluded.latest_tx) > (${t}.latest_ts, ${t}.latest_tx)))`;
  const merge = (t: string) => `
       rated_at = now(),
       event_count = ${t}.event_count + excluded.event_count,
       value_sum = case when excluded.value_sum is null then ${t}.value_sum else coalesce(${t}.value_sum, 0) + excluded.value_sum end,
       value_max = greatest(${t}.value_max, excluded.value_max),
       latest_value = case when ${newer(t)} then excluded.latest_value else ${t}.latest_value end,
       latest_tx = case when ${newer(t)} then excluded.latest_tx else ${t}.latest_tx end,
       latest_ts = case when ${newer(t)} then excluded.latest_ts else ${t}.latest_ts end`;
  await em.execute(
    `with h as materialized (
       select k.customer_id, date_trunc('hour', x.ts) as hour, ${gvOfGroup.sql} as gv, count(*) as event_count, ${columns}
         from (${rows.sql}) x
         join customer_event_key k on k.key = x.customer_id
        group by k.customer_id, date_trunc('hour', x.ts)${groupCols.map((c) => `, x.${c}`).join('')}
     ), hourly as (
       insert into usage_hourly (metric_id, customer_id, hour, group_values, event_count, value_sum, value_max, latest_ts, latest_tx, latest_value)
       select ?::uuid, h.customer_id, h.hour, h.gv, h.event_count, h.value_sum, h.value_max, h.latest_ts, h.latest_tx, h.latest_value from h
       on conflict (metric_id, customer_id, hour, group_values) do update set ${merge('usage_hourly')}
     )
     insert into usage_daily (metric_id, customer_id, day, group_values, event_count, value_sum, value_max, latest_ts, latest_tx, latest_value)
     select ?::uuid, h.customer_id, date_trunc('day', h.hour, 'UTC'), h.gv, sum(h.event_count), sum(h.value_sum), max(h.value_max), max(h.latest_ts),
            (array_agg(h.latest_tx order by h.latest_ts desc nulls last, h.latest_tx desc))[1],
            (array_agg(h.latest_value order by h.latest_ts desc nulls last, h.latest_tx desc))[1]
       from h group by 2, 3, 4
     on conflict (metric_id, customer_id, day, group_values) do update set ${merge('usage_daily')}`,
    [...gvOfGroup.params, ...rows.params, metric.id, metric.id],
  );
  if (unique) {
    const values = events(valueSql(metric), true);
    await em.execute(
      `with u as materialized (
         select distinct k.customer_id, date_trunc('hour', x.ts) as hour, x.gv, x.v
           from (${values.sql}) x join customer_event_key k on k.key = x.customer_id
          where x.v is not null
       ), hourly as (
         insert into usage_unique_hourly (metric_id, customer_id, hour, group_values, value)
         select ?::uuid, u.customer_id, u.hour, u.gv, u.v from u
         on conflict do nothing
       )
       insert into usage_unique_daily (metric_id, customer_id, day, group_values, value)
       select distinct ?::uuid, u.customer_id, date_trunc('day', u.hour, 'UTC'), u.gv, u.v from u
       on conflict do nothing`,
      [...values.params, metric.id, metric.id],
    );
  }
}

/**
 * The next slice of events to process: from xid `lo` up to `until` (exclusive), cut short after
 * about `maxEvents` at a transaction boundary (a transaction's events are never split). Returns
 * the slice's exclusive end and how many events it holds.
 */
async function xidWindow(tx: EntityManager, lo: string, until: string, maxEvents: number): Promise<{ hi: string; events: number }> {
  let hi = until;
  const [edge] = await tx.execute<{ xid: string }[]>(
    `select xid::text as xid from event where xid >= ?::xid8 and xid < ?::xid8 order by xid offset ? limit 1`, [lo, until, maxEvents]);
  if (edge) hi = edge.xid === lo ? (big(lo) + 1n).toString() : edge.xid;
  const [count] = await tx.execute<{ n: string }[]>(`select count(*)::text as n from event where xid >= ?::xid8 and xid < ?::xid8`, [lo, hi]);
  return { hi, events: Number(count!.n) };
}

/** Whether any stored event is still waiting for the rater (at or above its cursor). */
export async function ratingBacklog(em: EntityManager): Promise<boolean> {
  const [r] = await em.execute<{ p: boolean }[]>(`select exists (select 1 from event e, rating_cursor c where c.id = 'events' and e.xid >= c.xid) as p`);
  return r!.p;
}

async function activeMetrics(em: EntityManager): Promise<BillableMetric[]> {
  return em.execute<BillableMetric[]>(
    `select id, name, aggregation_type as "aggregationType", aggregation_key as "aggregationKey",
            event_type_filter as "eventTypeFilter", property_filters as "propertyFilters", group_keys as "groupKeys",
            rating_from_xid::text as "ratingFromXid", backfill_cursor_xid::text as "backfillCursorXid"
       from billable_metric where archived_at is null`,
  ) as Promise<BillableMetric[]>;
}

/**
 * Runs `work` as the only writer of aggregates: one REPEATABLE READ transaction that first locks
 * the rating cursor table, then reads. The lock makes raters, backfill chunks and metric creation
 * take turns; LOCK TABLE takes no snapshot, so the transaction's one snapshot is taken after the
 * lock is granted and sees everything the previous writer committed. One snapshot for the whole
 * pass means every statement sees the same customers, aliases and metrics: an event is counted
 * for every metric or parked as unmatched, never half. A serialization failure (another session
 * changed a row this one updates, e.g. a metric archived mid-chunk) retries the whole transaction.
 */
export async function asRatingWriter<T>(em: EntityManager, work: (tx: EntityManager) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await em.fork().transactional(async (tx) => {
        await tx.execute('lock table rating_cursor in exclusive mode');
        // A pass sorts its slice by customer, hour and group: in memory, not in temporary files.
        await tx.execute(`set local work_mem = '64MB'`);
        return work(tx);
      }, { isolationLevel: IsolationLevel.REPEATABLE_READ });
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (attempt < 5 && (code === '40001' || code === '40P01')) continue;
      throw err;
    }
  }
}

/**
 * Runs one aggregate writer's transaction; when it fails on the events themselves, quarantines
 * the events that fail on their own (found in a transaction of their own over `candidates`) and
 * runs it again. Each retry has moved at least one event out, so this ends.
 */
async function isolatingPoison<T>(em: EntityManager, run: (tx: EntityManager) => Promise<T>,
  candidates: (tx: EntityManager) => Promise<{ metrics: BillableMetric[]; ids: string[] }>, opts: { backfillOf?: string } = {}): Promise<{ result: T; quarantined: number }> {
  let quarantined = 0;
  for (;;) {
    try {
      return { result: await asRatingWriter(em, run), quarantined };
    } catch (err) {
      if (!isEventDataError(err)) throw err;
      const moved = await asRatingWriter(em, async (tx) => {
        const { metrics, ids } = await candidates(tx);
        return quarantinePoisonEvents(tx, aggregateMetric, metrics, ids, opts);
      });
      if (moved === 0) throw err;
      quarantined += moved;
    }
  }
}

async function passStart(tx: EntityManager): Promise<{ lo: string; xmin: string }> {
  const [cur] = await tx.execute<{ xid: string; xmin: string }[]>(
    `select xid::text as xid, pg_snapshot_xmin(pg_current_snapshot())::text as xmin from rating_cursor where id = 'events'`,
  );
  return { lo: cur!.xid, xmin: cur!.xmin };
}

/** One rating pass over at most `maxEvents` new events (plus any unmatched events now matched). */
export async function ratePass(em: EntityManager, maxEvents: number): Promise<RatePassResult> {
  const { result, quarantined } = await isolatingPoison(em, (tx) => ratePassOnce(tx, maxEvents), async (tx) => {
    // What the pass would read: its slice of new events and the unmatched events it would rematch.
    const { lo, xmin } = await passStart(tx);
    const { hi } = big(lo) < big(xmin) ? await xidWindow(tx, lo, xmin, maxEvents) : { hi: lo };
    const rows = await tx.execute<{ transaction_id: string }[]>(
      `select transaction_id from event where xid >= ?::xid8 and xid < ?::xid8
       union select u.transaction_id from event_unmatched u join customer_event_key k on k.key = u.customer_key`, [lo, hi]);
    return { metrics: await activeMetrics(tx), ids: rows.map((r) => r.transaction_id) };
  });
  return { ...result, quarantined };
}

async function ratePassOnce(tx: EntityManager, maxEvents: number): Promise<Omit<RatePassResult, 'quarantined'>> {
  const { lo, xmin } = await passStart(tx);
  let hi = xmin;
  let events = 0;
  if (big(lo) < big(hi)) {
    ({ hi, events } = await xidWindow(tx, lo, hi, maxEvents));
    if (events > 0) {
      for (const metric of await activeMetrics(tx)) {
        const from = maxXid(lo, metric.ratingFromXid);
        if (big(from) >= big(hi)) continue;
        await aggregateMetric(tx, metric, { sql: 'e.xid >= ?::xid8 and e.xid < ?::xid8', params: [from, hi] });
      }
      await tx.execute(
        `insert into event_unmatched (transaction_id, customer_key, xid)
         select e.transaction_id, e.customer_id, e.xid from event e
           left join customer_event_key k on k.key = e.customer_id
          where e.xid >= ?::xid8 and e.xid < ?::xid8 and k.key is null
         on conflict do nothing`, [lo, hi]);
      await tx.execute(MARK_ALERT_CUSTOMERS_SQL.replace('$WHERE', 'e.xid >= ?::xid8 and e.xid < ?::xid8'), [lo, hi]);
    }
    await tx.execute(`update rating_cursor set xid = ?::xid8, updated_at = now() where id = 'events'`, [hi]);
  }
  const rematched = await rematchPass(tx);
  return { events, rematched, cursor: big(lo) < big(hi) ? hi : lo };
}

/** Events that matched no customer when rated, whose id or alias now exists: rated now, once. */
async function rematchPass(tx: EntityManager): Promise<number> {
  const resolved = await tx.execute<{ transaction_id: string }[]>(
    `delete from event_unmatched u using customer_event_key k where k.key = u.customer_key returning u.transaction_id`);
  if (!resolved.length) return 0;
  const ids = pgTextArray(resolved.map((r) => r.transaction_id));
  await tx.execute(MARK_ALERT_CUSTOMERS_SQL.replace('$WHERE', EVENTS_BY_ID_SQL), [ids, ids]);
  for (const metric of await activeMetrics(tx)) {
    // Only where this metric already covers the event: live-rated range, or what its backfill passed.
    await aggregateMetric(tx, metric, {
      sql: `${EVENTS_BY_ID_SQL} and (e.xid >= ?::xid8 or e.xid < ?::xid8)`,
      params: [ids, ids, metric.ratingFromXid, metric.backfillCursorXid],
    });
  }
  return resolved.length;
}

/**
 * One chunk of a new metric's backfill: events older than the metric (xid below its
 * rating_from_xid, which the live rater had already passed), in xid order from its backfill
 * cursor. Events parked in event_unmatched are left to the rematch, which counts them for this
 * metric once the backfill cursor has passed them: counting them here too would count them twice
 * when their customer appears before the rematch runs. Returns whether the backfill is done.
 */
export async function backfillChunk(em: EntityManager, metricId: string, maxEvents: number): Promise<{ done: boolean; processed: number; total: number }> {
  // A turn as aggregate writer (like the rater), so a chunk and a pass never interleave their upserts.
  const { result } = await isolatingPoison(em, (tx) => backfillChunkOnce(tx, metricId, maxEvents), async (tx) => {
    const m = await backfillState(tx, metricId);
    const { hi } = await xidWindow(tx, m.cursor, m.until, maxEvents);
    const rows = await tx.execute<{ transaction_id: string }[]>(`select e.transaction_id from event e where ${backfillSource}`, [m.cursor, hi, metricId]);
    return { metrics: (await activeMetrics(tx)).filter((x) => x.id === metricId), ids: rows.map((r) => r.transaction_id) };
  }, { backfillOf: metricId });
  return result;
}

/** A backfill chunk's events (params: from xid, to xid, metric id): parked ones and ones quarantined for this metric are not its to count. */
const backfillSource = `e.xid >= ?::xid8 and e.xid < ?::xid8
  and not exists (select 1 from event_unmatched u where u.transaction_id = e.transaction_id)
  and not exists (select 1 from event_quarantine q where q.transaction_id = e.transaction_id and q.metric_id = ?::uuid)`;

async function backfillState(tx: EntityManager, metricId: string) {
  const [m] = await tx.execute<{ status: string; cursor: string; until: string; processed: string; total: string }[]>(
    `select backfill_status as status, backfill_cursor_xid::text as cursor, rating_from_xid::text as until,
            backfill_events_processed::text as processed, backfill_events_total::text as total
       from billable_metric where id = ? for update`, [metricId]);
  if (!m) throw new Error(`billable metric ${metricId} not found`);
  return m;
}

async function backfillChunkOnce(tx: EntityManager, metricId: string, maxEvents: number): Promise<{ done: boolean; processed: number; total: number }> {
  const m = await backfillState(tx, metricId);
  if (m.status === 'DONE') return { done: true, processed: Number(m.processed), total: Number(m.total) };
  const { hi, events } = await xidWindow(tx, m.cursor, m.until, maxEvents);
  const [metric] = (await activeMetrics(tx)).filter((x) => x.id === metricId);
  if (metric) await aggregateMetric(tx, metric, { sql: backfillSource, params: [m.cursor, hi, metricId] });
  const processed = Number(m.processed) + events;
  const done = hi === m.until;
  await tx.execute(
    `update billable_metric set backfill_cursor_xid = ?::xid8, backfill_events_processed = ?, backfill_status = ? where id = ?`,
    [hi, processed, done ? 'DONE' : 'RUNNING', metricId]);
  return { done, processed, total: Number(m.total) };
}

/**
 * Whether every event visible now for these customer keys has been rated: nothing at or above
 * the cursor, and nothing unmatched whose customer now exists. Invoices freeze only then.
 */
export async function ratingCaughtUp(em: EntityManager, customerKeys: string[]): Promise<boolean> {
  const [r] = await em.execute<{ pending: boolean }[]>(
    `select exists (select 1 from event e, rating_cursor c where c.id = 'events' and e.xid >= c.xid and e.customer_id = any(?::text[]))
         or exists (select 1 from event_unmatched u where u.customer_key = any(?::text[])) as pending`,
    [pgTextArray(customerKeys), pgTextArray(customerKeys)]);
  return !r!.pending;
}
