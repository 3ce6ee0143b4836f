import { ApplicationFailure, log } from '@temporalio/activity';
import { UsageCollector } from '../db/entities.js';
import { insertEvents } from '../db/events.js';
import { ownDatabaseIdentity, rowsToEvents, runCollectorQuery, SOURCE_LIMITS, SourceConnectError, withSource } from '../db/usage-collector.js';
import { classified } from './failures.js';
import type { ActivityDeps } from './deps.js';

const MAX_WINDOWS_PER_RUN = 100;

export function createCollectorActivities({ orm, lateUsageWindowMs = 34 * 86_400_000 }: ActivityDeps) {
  return {
    /**
     * Collects every whole window since the collector's cursor: runs its read-only query on the
     * source, ingests the rows as events (ids derived from the window and row, so a retry or a
     * rerun is deduplicated), then advances the cursor. No transaction is held across the source.
     * A row outside the ingest window is skipped (never stored: its key may be gone, so it could
     * count twice) and counted on the collector (`rows_outside_window`) and in the run's result.
     */
    async collectUsage({ collectorId }: { collectorId: string }): Promise<{ windows: number; events: number; outsideWindow?: number }> {
      const em = orm.em.fork();
      const c = await em.findOne(UsageCollector, { id: collectorId });
      if (!c) throw ApplicationFailure.nonRetryable(`usage collector ${collectorId} not found`, 'NotFound');
      if (c.archivedAt) return { windows: 0, events: 0 };
      const step = c.intervalSeconds * 1000;
      const until = Math.floor(Date.now() / step) * step;
      let windows = 0;
      let events = 0;
      let outsideWindow = 0;
      for (let start = c.collectedUntil.getTime(); start + step <= until && windows < MAX_WINDOWS_PER_RUN; start += step) {
        const windowStart = new Date(start);
        const windowEnd = new Date(start + step);
        const own = await ownDatabaseIdentity(orm.em.fork());
        // Refusals (Accrue's own database, a superuser role, several statements, too many rows)
        // fail the run for good; a source that is down is retried (its reason is logged here only).
        const rows = await classified(() => withSource(c.sourceUrl, own, async (src) => (await runCollectorQuery(src, c.query, windowStart, windowEnd, SOURCE_LIMITS.maxRows)).rows))
          .catch((err: unknown) => {
            if (err instanceof SourceConnectError) log.warn('usage collector source unreachable', { collectorId, reason: err.reason });
            throw err;
          });
        let batch, outside;
        try {
          ({ events: batch, outside } = rowsToEvents(c.id, c.eventType, windowStart, rows, { now: Date.now(), maxAgeMs: lateUsageWindowMs }));
        } catch (err) {
          // The query's output is wrong, not the network: retrying cannot help until it is fixed.
          throw ApplicationFailure.nonRetryable(`usage collector ${c.name}: ${(err as Error).message}`, 'BadCollectorRow');
        }
        for (let i = 0; i < batch.length; i += 1000) await insertEvents(orm.em.fork(), batch.slice(i, i + 1000));
        if (outside.length) log.warn('usage collector rows outside the ingest window skipped', { collectorId, windowStart: windowStart.toISOString(), skipped: outside.length, rows: outside.slice(0, 5) });
        await orm.em.fork().execute(
          `update usage_collector set collected_until = ?, last_run_at = now(), last_run_events = ?, last_run_outside_window = ?, rows_outside_window = rows_outside_window + ? where id = ?`,
          [windowEnd, batch.length, outside.length, outside.length, c.id]);
        outsideWindow += outside.length;
        windows++;
        events += batch.length;
      }
      log.info('usage collected', { collectorId, windows, events, outsideWindow });
      return { windows, events, ...(outsideWindow ? { outsideWindow } : {}) };
    },
  };
}
