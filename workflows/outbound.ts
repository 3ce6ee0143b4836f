import { continueAsNew, proxyActivities } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';

/**
 * The long-running outbound loop (`outbound/<task queue>`), the rater's companion: runs
 * `runOutbound`, an activity that for a minute at a time evaluates the alerts of customers the
 * rating passes touched (db/alerts.ts) and starts a delivery workflow for every new outbound
 * notification (db/notifications.ts), heartbeating between rounds, so a killed worker's round is
 * retried on another within seconds. Continue-as-new keeps the history short.
 */
const { runOutbound } = proxyActivities<Activities>({
  startToCloseTimeout: '2 minutes',
  heartbeatTimeout: '10 seconds',
  retry: { initialInterval: '500 milliseconds', maximumInterval: '10 seconds', backoffCoefficient: 2 },
});

export interface OutboundWorkflowInput {
  runForMs?: number;
}

export async function outboundWorkflow(input: OutboundWorkflowInput = {}): Promise<void> {
  for (let i = 0; i < 50; i++) await runOutbound({ runForMs: input.runForMs ?? 60_000 });
  await continueAsNew<typeof outboundWorkflow>(input);
}
