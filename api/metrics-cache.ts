import type { MikroORM } from '@mikro-orm/postgresql';
import { BillableMetric } from '../db/entities.js';

/**
 * Active billable metrics, cached briefly for the ingest hot path (to refuse events a metric
 * cannot aggregate) and event search. A new metric is seen within `ttlMs`.
 */
export function metricsCache(orm: MikroORM, ttlMs = 2000) {
  let cached: { at: number; metrics: Promise<BillableMetric[]> } | undefined;
  return {
    get(): Promise<BillableMetric[]> {
      if (!cached || Date.now() - cached.at > ttlMs) {
        const metrics = orm.em.fork().find(BillableMetric, { archivedAt: null });
        cached = { at: Date.now(), metrics };
        metrics.catch(() => { cached = undefined; });
      }
      return cached.metrics;
    },
  };
}
export type MetricsCache = ReturnType<typeof metricsCache>;
