import { proxyActivities } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';

/**
 * One run of a usage collector, started by its Temporal Schedule (`usage-collector/<id>`) at
 * every interval, or on demand. Temporal's durable retries replace the queue, retries and
 * dead-letter queue a cron job would need: a failing source is retried with backoff until it
 * answers, and every run is visible in the Temporal UI.
 */
const { collectUsage } = proxyActivities<Activities>({
  startToCloseTimeout: '5 minutes',
  retry: { initialInterval: '2 seconds', maximumInterval: '5 minutes', backoffCoefficient: 2 },
});

export async function usageCollectorWorkflow(input: { collectorId: string }): Promise<{ windows: number; events: number }> {
  return collectUsage(input);
}
