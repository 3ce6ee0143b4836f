import type { EntityManager } from '@mikro-orm/postgresql';
import { BillableMetric, type AggregationType, type EventTypeFilter, type PropertyFilter } from './entities.js';

export interface NewMetric {
  id: string;
  name: string;
  aggregationType: AggregationType;
  aggregationKey: string | null;
  eventTypeFilter: EventTypeFilter | null;
  propertyFilters: PropertyFilter[];
  groupKeys: string[][];
  customFields: Record<string, string>;
}

/**
 * Stores a new metric. It is rated live from the oldest transaction still running; every event
 * older than that is its backfill (db/rating.ts backfillChunk). Returns how many events the
 * backfill has to process (0: nothing to backfill, the metric is complete at once).
 */
export async function insertMetric(em: EntityManager, metric: NewMetric): Promise<number> {
  return em.transactional(async (tx) => {
    const [edge] = await tx.execute<{ xmin: string; total: string }[]>(
      `select x.xmin::text as xmin, (select count(*) from event where xid < x.xmin)::text as total
         from (select pg_snapshot_xmin(pg_current_snapshot()) as xmin) x`);
    const total = Number(edge!.total);
    tx.create(BillableMetric, {
      ...metric, createdAt: new Date(), archivedAt: null,
      ratingFromXid: edge!.xmin, backfillCursorXid: '1', backfillStatus: total > 0 ? 'RUNNING' : 'DONE',
      backfillEventsProcessed: 0, backfillEventsTotal: total,
    });
    return total;
  });
}
