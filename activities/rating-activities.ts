import { Context, CancelledFailure } from '@temporalio/activity';
import { maintainEventPartitions, type PartitionReport } from '../db/event-partitions.js';
import { backfillChunk, ratePass } from '../db/rating.js';
import type { ActivityDeps } from './deps.js';

/**
 * Most events per rating pass (one transaction). A pass takes what arrived since the last one, so
 * under load passes grow and each aggregate row absorbs more events; the cap keeps a pass after a
 * long backlog around a second.
 */
const PASS_EVENTS = 100_000;
/** Events per backfill chunk: a few seconds of work at most, well inside the activity timeout. */
const BACKFILL_CHUNK_EVENTS = 10_000;
const IDLE_SLEEP_MS = 25;
/**
 * A pass smaller than this waits for the rest of the rating interval before the next one: each
 * pass upserts one aggregate row per (metric, customer, hour, group) it touches, so many small
 * passes cost several times the CPU of a few larger ones (bench:ingest, docs/benchmarks.md).
 */
const FULL_PASS_EVENTS = 10_000;

/** Day partitions of events kept ready ahead of today. */
const PARTITIONS_AHEAD_DAYS = 7;
const DAY_MS = 86_400_000;

export function createRatingActivities({ orm, lateUsageWindowMs, eventRetentionMs, ratingIntervalMs = 250 }: ActivityDeps) {
  return {
    /**
     * Rates for `runForMs`, pass after pass, heartbeating between passes. Each pass commits on its
     * own, so a cancel, a timeout or a killed worker loses at most the pass in flight, which then
     * never happened.
     */
    async rateEvents({ runForMs }: { runForMs: number }): Promise<{ passes: number; events: number }> {
      const ctx = Context.current();
      const until = Date.now() + runForMs;
      let passes = 0;
      let events = 0;
      while (Date.now() < until) {
        const started = Date.now();
        const r = await ratePass(orm.em.fork(), PASS_EVENTS);
        passes++;
        events += r.events;
        ctx.heartbeat({ cursor: r.cursor, events });
        const idle = r.events === 0 && r.rematched === 0;
        // Nothing new: look again soon. A small pass: let events gather until the interval is up.
        const wait = idle ? IDLE_SLEEP_MS : r.events < FULL_PASS_EVENTS ? started + ratingIntervalMs - Date.now() : 0;
        if (wait > 0) {
          try {
            await ctx.sleep(wait);
          } catch (err) {
            if (err instanceof CancelledFailure) break;
            throw err;
          }
        }
      }
      return { passes, events };
    },

    /**
     * The `event-partitions` schedule's work (db/event-partitions.ts): partitions for the coming
     * days, retirement of those past the retention window (by default the ingest window + 2 days:
     * an event can be 24 h ahead, and a day of margin). Idempotent.
     */
    async maintainEventPartitions(): Promise<PartitionReport> {
      const retentionMs = eventRetentionMs ?? (lateUsageWindowMs ?? 34 * DAY_MS) + 2 * DAY_MS;
      return maintainEventPartitions(orm.em.fork(), { now: new Date(), aheadDays: PARTITIONS_AHEAD_DAYS, retentionMs });
    },

    async backfillMetric({ metricId, maxEvents }: { metricId: string; maxEvents?: number }): Promise<{ done: boolean; processed: number; total: number }> {
      const chunk = Number.isSafeInteger(maxEvents) && maxEvents! > 0 ? Math.min(maxEvents!, BACKFILL_CHUNK_EVENTS) : BACKFILL_CHUNK_EVENTS;
      return backfillChunk(orm.em.fork(), metricId, chunk);
    },
  };
}
