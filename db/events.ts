import type { EntityManager } from '@mikro-orm/postgresql';
import type pg from 'pg';

export interface NewEvent {
  transactionId: string;
  customerId: string;
  eventType: string;
  timestamp: string;
  /** The event's properties; numbers a JS double cannot hold exactly arrive as decimal strings. */
  properties: Record<string, unknown>;
}

/**
 * The ingest hot path: one statement inserts the whole batch; a transaction_id seen before (in
 * this batch, an earlier one, or a concurrent request) is skipped, never counted twice. The
 * statement commits before the API answers, so a 200 means the events are durable (I5).
 * Returns how many events were new.
 */
export async function insertEvents(db: EntityManager | pg.Pool, events: NewEvent[]): Promise<number> {
  if (events.length === 0) return 0;
  const rows = events.map((e) => ({ transaction_id: e.transactionId, customer_id: e.customerId, event_type: e.eventType, ts: e.timestamp, properties: e.properties }));
  // One statement: the new events are inserted, and every submission whose transaction_id was
  // already stored (earlier, concurrently, or twice in this batch) is logged as a duplicate with
  // its payload's hash (only duplicates pay for hashing: /v1/events/search compares it with the
  // stored event's, to report a transaction_id reused for a different payload).
  // Rows go in transaction_id order, so concurrent batches sharing ids wait for each other in
  // one order and never deadlock; within a batch the first occurrence wins.
  const sql =
    `with input as (
       select t.*, row_number() over () as n
         from jsonb_to_recordset($1::jsonb) as t(transaction_id text, customer_id text, event_type text, ts timestamptz, properties jsonb)
     ), inserted as (
       insert into event (transaction_id, customer_id, event_type, ts, properties)
       select transaction_id, customer_id, event_type, ts, coalesce(properties, '{}'::jsonb) from input order by transaction_id, n
       on conflict (transaction_id) do nothing
       returning transaction_id
     ), firsts as (
       select distinct on (i.transaction_id) i.n from input i join inserted s using (transaction_id) order by i.transaction_id, i.n
     ), dups as (
       insert into event_duplicate (transaction_id, payload_hash)
       select i.transaction_id, event_payload_hash(i.customer_id, i.event_type, i.ts, i.properties) from input i where i.n not in (select n from firsts)
     )
     select count(*)::text as inserted from inserted`;
  const param = JSON.stringify(rows);
  // On a raw pg pool (the API's hot path) the batch travels as a bound parameter; MikroORM would
  // inline it as an escaped literal, which costs the API a scan over every character.
  const res = 'execute' in db
    ? await db.execute<{ inserted: string }[]>(sql.replace('$1', '?'), [param])
    : (await db.query<{ inserted: string }>(sql, [param])).rows;
  return Number(res[0]?.inserted ?? 0);
}
