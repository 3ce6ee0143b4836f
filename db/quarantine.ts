import type { EntityManager } from '@mikro-orm/postgresql';
import type { BillableMetric } from './entities.js';
import { EVENTS_BY_ID_SQL } from './events.js';
import type { Sql } from './metric-sql.js';
import { pgTextArray } from './sql.js';

/**
 * Poison events: no single event may stop the rater. When a rating statement fails on the data
 * itself (SQLSTATE class 22, data exception: a value numeric cannot hold; class 54, program limit:
 * a key too large for an index), the events of the failed pass are tried metric by metric under
 * savepoints, halving the set until the events that fail on their own are found, and recorded in
 * `event_quarantine` with the error as the reason (shown by /v1/events/search and /health); the
 * pass then runs again without them. New events (a rating pass, a rematch: counted nowhere yet)
 * are moved out of `event`; an older event failing one metric's backfill stays where the other
 * metrics counted it, and that metric's backfill skips it.
 */
export function isEventDataError(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && (code.startsWith('22') || code.startsWith('54'));
}

type Aggregate = (tx: EntityManager, metric: BillableMetric, source: Sql) => Promise<void>;

/**
 * Runs `aggregate` for these events in a savepoint that is always rolled back: the error, or null.
 * Outside a backfill, only events the metric rates live or its backfill has passed (what a pass
 * or a rematch would aggregate for it), so an event is not moved out for a metric that would not
 * have read it yet.
 */
async function tryAggregate(tx: EntityManager, aggregate: Aggregate, metric: BillableMetric, ids: string[], backfill: boolean): Promise<string | null> {
  await tx.execute('savepoint accrue_probe');
  try {
    await aggregate(tx, metric, backfill
      ? { sql: EVENTS_BY_ID_SQL, params: [pgTextArray(ids), pgTextArray(ids)] }
      : { sql: `${EVENTS_BY_ID_SQL} and (e.xid >= ?::xid8 or e.xid < ?::xid8)`, params: [pgTextArray(ids), pgTextArray(ids), metric.ratingFromXid, metric.backfillCursorXid] });
    return null;
  } catch (err) {
    if (!isEventDataError(err)) throw err;
    return (err as Error).message;
  } finally {
    await tx.execute('rollback to savepoint accrue_probe');
  }
}

/** The events among `ids` that fail on their own, with the error each one raised. */
async function failing(tx: EntityManager, aggregate: Aggregate, metric: BillableMetric, ids: string[], error: string, found: Map<string, string>, backfill: boolean): Promise<void> {
  if (ids.length === 1) {
    found.set(ids[0]!, `billable metric ${metric.name} (${metric.id}): ${error}`);
    return;
  }
  const half = Math.ceil(ids.length / 2);
  for (const part of [ids.slice(0, half), ids.slice(half)]) {
    const e = await tryAggregate(tx, aggregate, metric, part, backfill);
    if (e !== null) await failing(tx, aggregate, metric, part, e, found, backfill);
  }
}

/**
 * Finds and quarantines the candidate events that fail `aggregate` on their own for one of
 * `metrics`; returns how many were moved (0: the failure is not one event's, nothing moved).
 */
export async function quarantinePoisonEvents(tx: EntityManager, aggregate: Aggregate, metrics: BillableMetric[], candidates: string[],
  opts: { backfillOf?: string } = {}): Promise<number> {
  const found = new Map<string, string>();
  if (!candidates.length) return 0;
  for (const metric of metrics) {
    const left = candidates.filter((id) => !found.has(id));
    const backfill = opts.backfillOf !== undefined;
    const error = left.length ? await tryAggregate(tx, aggregate, metric, left, backfill) : null;
    if (error !== null) await failing(tx, aggregate, metric, left, error, found, backfill);
  }
  if (!found.size) return 0;
  const rows = JSON.stringify([...found].map(([transaction_id, reason]) => ({ transaction_id, reason })));
  const bad = 'select * from jsonb_to_recordset(?::jsonb) as t(transaction_id text, reason text)';
  if (opts.backfillOf) {
    await tx.execute(
      `with bad as (${bad})
       insert into event_quarantine (transaction_id, metric_id, customer_id, event_type, ts, properties, xid, reason)
       select e.transaction_id, ?::uuid, e.customer_id, e.event_type, e.ts, e.properties, e.xid, bad.reason from event e join bad using (transaction_id)
        where e.xid = any(array(select k.xid from event_key k join bad using (transaction_id)))
       on conflict do nothing`, [rows, opts.backfillOf]);
    return found.size;
  }
  await tx.execute(`with bad as (${bad}) delete from event_unmatched u using bad where u.transaction_id = bad.transaction_id`, [rows]);
  await tx.execute(
    `with bad as (${bad}),
          moved as (delete from event e using bad where e.transaction_id = bad.transaction_id
                      and e.xid = any(array(select k.xid from event_key k join bad using (transaction_id)))
                    returning e.transaction_id, e.customer_id, e.event_type, e.ts, e.properties, e.xid, bad.reason)
     insert into event_quarantine (transaction_id, customer_id, event_type, ts, properties, xid, reason)
     select * from moved on conflict do nothing`, [rows]);
  return found.size;
}
