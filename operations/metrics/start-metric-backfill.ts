import { metricBackfillWorkflow } from '../../workflows/metric-backfill.js';
import { metricBackfillWorkflowId } from '../../workflows/search-attributes.js';
import { WorkflowIdReusePolicy, type Client } from '../workflow-client.js';

/**
 * Starts `metric-backfill/<id>` for a new metric with events below the rating cursor. Idempotent;
 * never fails the request: if Temporal is unreachable the worker starts pending backfills on boot.
 */
export async function startMetricBackfill(temporal: Client, taskQueue: string, metricId: string): Promise<void> {
  const id = metricId;
  await temporal.workflow.start(metricBackfillWorkflow, {
    workflowId: metricBackfillWorkflowId(id), taskQueue, args: [{ metricId: id }],
    workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
  }).catch((err: Error) => console.warn(`[api] backfill of metric ${id} will start with the worker: ${err.message}`));
}
