import type { MikroORM } from '@mikro-orm/postgresql';
import { NotFoundError } from '../../billing/errors.js';
import { BillableMetric } from '../../db/entities.js';
import { UUID_RE } from '../../db/ids.js';

/** A billable metric as Metronome shapes it, and the lookup every metric route shares. */

export function metricJson(m: BillableMetric) {
  return {
    id: m.id,
    name: m.name,
    aggregation_type: m.aggregationType,
    ...(m.aggregationKey ? { aggregation_key: m.aggregationKey } : {}),
    ...(m.eventTypeFilter ? { event_type_filter: m.eventTypeFilter } : {}),
    property_filters: m.propertyFilters,
    group_keys: m.groupKeys,
    custom_fields: m.customFields,
    ...(m.archivedAt ? { archived_at: m.archivedAt.toISOString() } : {}),
    // Accrue: a metric applies to events ingested before it existed; this is that backfill's progress.
    backfill: { status: m.backfillStatus, events_processed: m.backfillEventsProcessed, events_total: m.backfillEventsTotal },
  };
}

export async function findMetric(orm: MikroORM, id: string, field = 'id'): Promise<BillableMetric> {
  const m = UUID_RE.test(id) ? await orm.em.fork().findOne(BillableMetric, { id: id.toLowerCase() }) : null;
  if (!m) throw new NotFoundError('billable metric', id, field);
  return m;
}
