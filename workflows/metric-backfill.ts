import { proxyActivities, upsertSearchAttributes } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import { LifecycleStateKey } from './search-attributes.js';

/**
 * `metric-backfill/<metric_id>`: applies a new billable metric to the events ingested before it
 * existed, chunk by chunk; each chunk commits with the metric's backfill cursor, so progress is
 * exact, visible on the metric, and never double-counted on a retry.
 */
// Each chunk is one short transaction; the timeout is also how fast a killed worker's chunk is retried.
const { backfillMetric } = proxyActivities<Activities>({
  startToCloseTimeout: '15 seconds',
  retry: { initialInterval: '1 second', maximumInterval: '30 seconds', backoffCoefficient: 2 },
});

export async function metricBackfillWorkflow(input: { metricId: string }): Promise<{ processed: number }> {
  upsertSearchAttributes([{ key: LifecycleStateKey, value: 'BACKFILLING' }]);
  for (;;) {
    const r = await backfillMetric({ metricId: input.metricId });
    if (r.done) {
      upsertSearchAttributes([{ key: LifecycleStateKey, value: 'DONE' }]);
      return { processed: r.processed };
    }
  }
}
