import { proxyActivities } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import type { PartitionReport } from '../db/event-partitions.js';

/**
 * One run of event partition upkeep, started by the Temporal Schedule `event-partitions/<task
 * queue>` every 6 hours (and once when a worker starts): creates the coming days' partitions of
 * `event` and retires those past the retention window (db/event-partitions.ts). A failing run
 * is retried by Temporal and visible in the Temporal UI; partitions exist a week ahead, so a
 * missed day costs nothing, and an uncovered day still lands in the default partition.
 */
const { maintainEventPartitions } = proxyActivities<Activities>({
  startToCloseTimeout: '30 minutes',
  retry: { initialInterval: '5 seconds', maximumInterval: '5 minutes', backoffCoefficient: 2 },
});

export async function eventPartitionsWorkflow(): Promise<PartitionReport> {
  return maintainEventPartitions();
}
