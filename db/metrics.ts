import type { EntityManager } from '@mikro-orm/postgresql';
import { asRatingWriter } from './rating.js';
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
 * Stores a new metric. It is rated live from the rating cursor (read in a turn as aggregate
 * writer, so no rating pass can move the cursor between this read and the metric's commit, and the
 * next pass sees the metric); every event below the cursor is its backfill (db/rating.ts
 * backfillChunk). The cursor, not the oldest running transaction, is the boundary: events below it
 * have already been through the live rater, so each one is either in the aggregates' reach of the
 * backfill or parked as unmatched (and left to the rematch); events above it are rated live.
 * Returns how many events the backfill has to process (0: nothing to backfill, the metric is
 * complete at once).
 */
export async function insertMetric(em: EntityManager, metric: NewMetric): Promise<number> {
  return asRatingWriter(em, async (tx) => {
    const [edge] = await tx.execute<{ cursor: string; total: string }[]>(
      `select c.xid::text as cursor, (select count(*) from event where xid < c.xid)::text as total
         from rating_cursor c where c.id = 'events'`);
    const total = Number(edge!.total);
    tx.create(BillableMetric, {
      ...metric, createdAt: new Date(), archivedAt: null,
      ratingFromXid: edge!.cursor, backfillCursorXid: '1', backfillStatus: total > 0 ? 'RUNNING' : 'DONE',
      backfillEventsProcessed: 0, backfillEventsTotal: total,
    });
    return total;
  });
}
