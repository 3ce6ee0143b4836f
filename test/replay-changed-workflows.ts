// A deliberately incompatible build for test/replay.test.ts: `metricBackfillWorkflow` of
// workflows/metric-backfill.ts as it would look after a careless edit — one extra activity before
// the first chunk, without `patched()`. Replaying a recorded backfill against it must fail; if it
// did not, the replay check could catch nothing. Never import this from workflows/.
import { continueAsNew, proxyActivities, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import { BACKFILL_CHUNKS_PER_RUN, type MetricBackfillInput } from '../workflows/metric-backfill.js';
import { LifecycleStateKey } from '../workflows/search-attributes.js';

const { backfillMetric, loadContractPlan } = proxyActivities<Activities>({ startToCloseTimeout: '15 seconds' });

export async function metricBackfillWorkflow(input: MetricBackfillInput): Promise<{ processed: number }> {
  upsertSearchAttributes([{ key: LifecycleStateKey, value: 'BACKFILLING' }]);
  await loadContractPlan({ contractId: input.metricId }); // the change: a command the recorded history never saw
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
