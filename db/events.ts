import type { EntityManager } from '@mikro-orm/postgresql';
import type pg from 'pg';
import { isDatabaseUnavailable } from './pool.js';
import { pgTextArray } from './sql.js';

export interface NewEvent {
  transactionId: string;
  customerId: string;
  eventType: string;
  timestamp: string;
  /** The event's properties; numbers a JS double cannot hold exactly arrive as decimal strings. */
  properties: Record<string, unknown>;
}

/**
 * The ingest hot path: one statement stores the whole batch; a transaction_id seen before (in
 * this batch, an earlier one, or a concurrent request) is skipped, never counted twice. The
 * statement commits before the API answers, so a 200 means the events are durable (I5).
 * Returns how many events were new.
 *
 * Deduplication is `event_key` (one primary key on transaction_id over every partition, see
 * Migration20261211100000_event_partitions). The statement first skips ids already stored with a
 * plain index probe and inserts the rest without ON CONFLICT (speculative insertion costs about a
 * third of the statement); when a concurrent request stored one of the same ids after this
 * statement's snapshot, the insert fails with a unique violation (SQLSTATE 23505), nothing of it
 * is kept, and the batch runs again with ON CONFLICT DO NOTHING, which waits for that request.
 * Keys go in transaction_id order, so concurrent batches sharing ids never deadlock.
 * Every submission of an id already stored (earlier, concurrently, or twice in this batch) is
 * logged in event_duplicate with its payload's hash (/v1/events/search tells a retry from a
 * reused id by it).
 */
/** How often a batch met a concurrent request's ids and ran again waiting for it (tests, metrics). */
export const ingestStats = { conflictRetries: 0 };

export async function insertEvents(db: EntityManager | pg.Pool, events: NewEvent[]): Promise<number> {
  if (events.length === 0) return 0;
  const params = [
    events.map((e) => e.transactionId), events.map((e) => e.customerId), events.map((e) => e.eventType),
    events.map((e) => e.timestamp), events.map((e) => JSON.stringify(e.properties)),
  ];
  // Through MikroORM (collectors, tests) the batch may run inside a caller's transaction, which a
  // unique violation would abort: that path waits on conflicts from the start.
  if ('execute' in db) return runInsert(db, insertSql(true), params);
  // One connection for both attempts, released as healthy after a unique violation (pool.query
  // would close the connection on any error: a new backend and login per conflict).
  const client = await db.connect();
  let broken: Error | undefined;
  try {
    try {
      return await runInsert(client, insertSql(false), params);
    } catch (err) {
      if ((err as { code?: string }).code !== '23505') throw err;
      ingestStats.conflictRetries++;
      return await runInsert(client, insertSql(true), params);
    }
  } catch (err) {
    // A statement PostgreSQL refused (an SQLSTATE) leaves the connection usable; anything else may not.
    if (typeof (err as { code?: unknown }).code !== 'string' || !/^[0-9A-Z]{5}$/.test((err as { code: string }).code) || isDatabaseUnavailable(err)) broken = err as Error;
    throw err;
  } finally {
    client.release(broken);
  }
}

const insertSql = (onConflict: boolean) =>
  `with input as (
     select * from unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::jsonb[]) with ordinality
       as t(transaction_id, customer_id, event_type, ts, properties, n)
   ), keys as (
     insert into event_key (transaction_id)
     select distinct i.transaction_id from input i
      where not exists (select 1 from event_key k where k.transaction_id = i.transaction_id)
      order by 1
     ${onConflict ? 'on conflict (transaction_id) do nothing' : ''}
     returning transaction_id
   ), firsts as (
     select distinct on (i.transaction_id) i.* from input i join keys using (transaction_id) order by i.transaction_id, i.n
   ), inserted as (
     insert into event (transaction_id, customer_id, event_type, ts, properties)
     select transaction_id, customer_id, event_type, ts, properties from firsts
   ), dups as (
     insert into event_duplicate (transaction_id, payload_hash)
     select i.transaction_id, event_payload_hash(i.customer_id, i.event_type, i.ts, i.properties) from input i
      where i.n not in (select n from firsts)
   )
   select count(*)::text as inserted from firsts`;

async function runInsert(db: EntityManager | pg.PoolClient, sql: string, params: string[][]): Promise<number> {
  // On a raw pg pool (the API's hot path) the arrays travel as bound parameters, as a prepared
  // statement; MikroORM would inline them as escaped literals.
  const res = 'execute' in db
    ? await db.execute<{ inserted: string }[]>(sql.replace(/\$(\d)/g, '?'), params.map(pgTextArray))
    : (await db.query<{ inserted: string }>({ name: sql.includes('on conflict') ? 'accrue_ingest_retry' : 'accrue_ingest', text: sql, values: params })).rows;
  return Number(res[0]?.inserted ?? 0);
}

/**
 * SQL that finds stored events by transaction id (params: the ids twice, as text arrays) through
 * event_key: an index probe there, then the xid index of the partitions (a bare condition on
 * transaction_id would read every partition).
 */
export const EVENTS_BY_ID_SQL = 'e.transaction_id = any(?::text[]) and e.xid = any(array(select k.xid from event_key k where k.transaction_id = any(?::text[])))';
