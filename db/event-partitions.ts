import type { EntityManager } from '@mikro-orm/postgresql';

/**
 * Event partitions (Migration20261211100000_event_partitions): one per UTC day of ingestion,
 * created ahead and retired after the retention window by the `event-partitions` Temporal
 * Schedule. Aggregates keep the history; raw events and their deduplication keys are kept for
 * the retention window, which is longer than any event the API still accepts can be late
 * (ACCRUE_INGEST_MAX_AGE, plus the 24 h an event may be ahead, plus a day).
 */
export interface PartitionReport {
  /** Day partitions created this run. */
  created: string[];
  /** Day partitions past the window, with what happened to each ("dropped", or why not). */
  retired: { partition: string; result: string }[];
  /** Rows deleted past the window from the default partition, event_key and event_duplicate. */
  purged: { defaultPartition: number; keys: number; duplicates: number };
}

const DAY_MS = 86_400_000;
const PURGE_BATCH = 50_000;

/** Every day partition of `event` with its range (the default partition excluded). */
export async function eventPartitions(em: EntityManager): Promise<{ name: string; from: Date; to: Date }[]> {
  const rows = await em.execute<{ name: string; bound: string }[]>(
    `select c.relname as name, pg_get_expr(c.relpartbound, c.oid) as bound
       from pg_inherits i join pg_class c on c.oid = i.inhrelid
      where i.inhparent = 'event'::regclass and c.relname <> 'event_default'
      order by c.relname`);
  return rows.flatMap((r) => {
    const m = /FROM \('([^']+)'\) TO \('([^']+)'\)/.exec(r.bound);
    return m ? [{ name: r.name, from: new Date(m[1]!), to: new Date(m[2]!) }] : [];
  });
}

const utcDay = (ms: number) => new Date(Math.floor(ms / DAY_MS) * DAY_MS).toISOString().slice(0, 10);

/**
 * Creates the partitions of yesterday through `aheadDays` from `now` (each is created once;
 * a day whose rows already went to the default partition keeps them there), retires day
 * partitions that ended more than `retentionMs` ago, and purges what the window no longer needs.
 * Idempotent: every step checks before it acts, so a retried or repeated run changes nothing more.
 */
export async function maintainEventPartitions(em: EntityManager, opts: { now: Date; aheadDays: number; retentionMs: number }): Promise<PartitionReport> {
  const report: PartitionReport = { created: [], retired: [], purged: { defaultPartition: 0, keys: 0, duplicates: 0 } };
  const today = Math.floor(opts.now.getTime() / DAY_MS) * DAY_MS;
  for (let d = -1; d <= opts.aheadDays; d++) {
    const day = utcDay(today + d * DAY_MS);
    const [r] = await em.execute<{ result: string }[]>('select event_partition_ensure(?::date) as result', [day]);
    if (r!.result === 'created') report.created.push(`event_p${day.replaceAll('-', '')}`);
  }
  const cutoff = new Date(opts.now.getTime() - opts.retentionMs);
  for (const p of await eventPartitions(em)) {
    if (p.to.getTime() > cutoff.getTime()) continue;
    const [r] = await em.execute<{ result: string }[]>('select event_partition_retire(?, ?::timestamptz) as result', [p.name, cutoff.toISOString()]);
    report.retired.push({ partition: p.name, result: r!.result });
  }
  // Past the window: rated rows of the default partition that no customer is still awaited for
  // and no RUNNING metric backfill has yet to read (checked under the rating cursor's lock, as
  // event_partition_retire does: upgraded installs keep their history there), and the deduplication keys and duplicate log of that time (a parked event keeps its key, so
  // a retry of it stays a duplicate until it is rated). In batches, each its own transaction.
  const purge = async (sql: string, underRatingLock = false) => {
    let total = 0;
    for (;;) {
      const rows = underRatingLock
        ? await em.fork().transactional(async (tx) => {
          await tx.execute(`set local lock_timeout = '2s'`);
          await tx.execute('lock table rating_cursor in share mode');
          return tx.execute<{ n: string }[]>(sql, [cutoff.toISOString(), PURGE_BATCH]);
        })
        : await em.execute<{ n: string }[]>(sql, [cutoff.toISOString(), PURGE_BATCH]);
      const n = Number(rows[0]?.n ?? 0);
      total += n;
      if (n < PURGE_BATCH) return total;
    }
  };
  report.purged.defaultPartition = await purge(
    `with gone as (delete from event_default d where d.ctid = any(array(
        select x.ctid from event_default x, rating_cursor c
         where c.id = 'events' and x.ingested_at < ?::timestamptz and x.xid < c.xid
           and not exists (select 1 from event_unmatched u where u.transaction_id = x.transaction_id)
           and not exists (select 1 from billable_metric m where m.backfill_status = 'RUNNING'
                            and x.xid >= m.backfill_cursor_xid and x.xid < m.rating_from_xid) limit ?)) returning 1)
     select count(*)::text as n from gone`, true);
  report.purged.keys = await purge(
    `with gone as (delete from event_key k where k.ctid = any(array(
        select x.ctid from event_key x, rating_cursor c where c.id = 'events' and x.ingested_at < ?::timestamptz and x.xid < c.xid
           and not exists (select 1 from event_unmatched u where u.transaction_id = x.transaction_id) limit ?)) returning 1)
     select count(*)::text as n from gone`);
  report.purged.duplicates = await purge(
    `with gone as (delete from event_duplicate d where d.ctid = any(array(
        select x.ctid from event_duplicate x where x.received_at < ?::timestamptz limit ?)) returning 1)
     select count(*)::text as n from gone`);
  return report;
}
