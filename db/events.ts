import type { EntityManager } from '@mikro-orm/postgresql';

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
export async function insertEvents(em: EntityManager, events: NewEvent[]): Promise<number> {
  if (events.length === 0) return 0;
  const rows = events.map((e) => ({ transaction_id: e.transactionId, customer_id: e.customerId, event_type: e.eventType, ts: e.timestamp, properties: e.properties }));
  const res = await em.execute<{ affectedRows?: number }>(
    `insert into event (transaction_id, customer_id, event_type, ts, properties)
     select t.transaction_id, t.customer_id, t.event_type, t.ts, coalesce(t.properties, '{}'::jsonb)
       from jsonb_to_recordset(?::jsonb) as t(transaction_id text, customer_id text, event_type text, ts timestamptz, properties jsonb)
     on conflict (transaction_id) do nothing`,
    [JSON.stringify(rows)],
    'run',
  );
  return Number(res.affectedRows ?? 0);
}
