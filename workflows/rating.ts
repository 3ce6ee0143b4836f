import { continueAsNew, proxyActivities } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';

/**
 * The long-running rater (`rating/<task queue>`): runs `rateEvents`, an activity that keeps
 * rating for a minute at a time — each pass one PostgreSQL transaction that moves new events into
 * aggregates together with the cursor — and heartbeats, so a killed worker's pass is retried on
 * another within seconds. Durable retries, never a dead-letter queue. Continue-as-new keeps the
 * history short.
 */
const { rateEvents } = proxyActivities<Activities>({
  startToCloseTimeout: '2 minutes',
  heartbeatTimeout: '10 seconds',
  retry: { initialInterval: '500 milliseconds', maximumInterval: '10 seconds', backoffCoefficient: 2 },
});

export interface RatingWorkflowInput {
  /** How long each rateEvents activity keeps rating before it returns. */
  runForMs?: number;
}

export async function ratingWorkflow(input: RatingWorkflowInput = {}): Promise<void> {
  for (let i = 0; i < 50; i++) await rateEvents({ runForMs: input.runForMs ?? 60_000 });
  await continueAsNew<typeof ratingWorkflow>(input);
}
