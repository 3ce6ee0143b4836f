import { continueAsNew, proxyActivities, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import { LifecycleStateKey } from './search-attributes.js';

/**
 * `metric-backfill/<metric_id>`: applies a new billable metric to the events ingested before it
 * existed, chunk by chunk; each chunk commits with the metric's backfill cursor, so progress is
 * exact, visible on the metric, and never double-counted on a retry. The cursor lives in the
 * database, not in the workflow, so a run continues as new after `chunksPerRun` chunks (or when
 * Temporal suggests it) with the same input and picks up where the last chunk committed: a
 * backfill of any size stays far below Temporal's history limits.
 */
// Each chunk is one short transaction; the timeout is also how fast a killed worker's chunk is retried.
const { backfillMetric } = proxyActivities<Activities>({
  startToCloseTimeout: '15 seconds',
  retry: { initialInterval: '1 second', maximumInterval: '30 seconds', backoffCoefficient: 2 },
});

/** Chunks per run: ~6 history events each, so a run stays near 3,000 events (the limit is 51,200). */
export const BACKFILL_CHUNKS_PER_RUN = 500;

export interface MetricBackfillInput {
  metricId: string;
  /** Chunks before continuing as new (default BACKFILL_CHUNKS_PER_RUN). */
  chunksPerRun?: number;
  /** Events per chunk (default: the activity's). */
  chunkEvents?: number;
}

export async function metricBackfillWorkflow(input: MetricBackfillInput): Promise<{ processed: number }> {
  upsertSearchAttributes([{ key: LifecycleStateKey, value: 'BACKFILLING' }]);
  const perRun = input.chunksPerRun ?? BACKFILL_CHUNKS_PER_RUN;
  for (let chunks = 0; ; chunks++) {
    if (chunks >= perRun || workflowInfo().continueAsNewSuggested) return continueAsNew<typeof metricBackfillWorkflow>(input);
    const r = await backfillMetric({ metricId: input.metricId, maxEvents: input.chunkEvents });
    if (r.done) {
      upsertSearchAttributes([{ key: LifecycleStateKey, value: 'DONE' }]);
      return { processed: r.processed };
    }
  }
}
