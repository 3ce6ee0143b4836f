import type { MikroORM } from '@mikro-orm/postgresql';
import { ScheduleAlreadyRunning, ScheduleOverlapPolicy, WorkflowIdReusePolicy, type Client } from '@temporalio/client';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import { BillableMetric } from '../db/entities.js';
import { eventPartitionsWorkflow } from '../workflows/event-partitions.js';
import { metricBackfillWorkflow } from '../workflows/metric-backfill.js';
import { outboundWorkflow } from '../workflows/outbound.js';
import { ratingWorkflow } from '../workflows/rating.js';
import { eventPartitionsScheduleId, metricBackfillWorkflowId, outboundWorkflowId, ratingWorkflowId } from '../workflows/search-attributes.js';

async function startOnce(start: () => Promise<unknown>): Promise<void> {
  try {
    await start();
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
  }
}

/**
 * Run by every worker at start: the rater and the outbound loop (alerts, notifications) must
 * always be running, the event partitions schedule must exist (and runs once now), and every
 * metric whose backfill is unfinished must have its backfill workflow. Starting is idempotent
 * (fixed ids).
 */
export async function ensureBackgroundWorkflows(client: Client, orm: MikroORM, taskQueue: string): Promise<void> {
  await startOnce(() => client.workflow.start(ratingWorkflow, {
    workflowId: ratingWorkflowId(taskQueue), taskQueue, args: [{}],
    workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE,
  }));
  await startOnce(() => client.workflow.start(outboundWorkflow, {
    workflowId: outboundWorkflowId(taskQueue), taskQueue, args: [{}],
    workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE,
  }));
  const scheduleId = eventPartitionsScheduleId(taskQueue);
  try {
    await client.schedule.create({
      scheduleId,
      spec: { intervals: [{ every: '6h' }] },
      action: { type: 'startWorkflow', workflowType: eventPartitionsWorkflow, args: [], taskQueue, workflowId: `event-partitions-run/${taskQueue}` },
      policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '1 hour' },
    });
  } catch (err) {
    if (!(err instanceof ScheduleAlreadyRunning)) throw err;
  }
  await client.schedule.getHandle(scheduleId).trigger(ScheduleOverlapPolicy.SKIP);
  const pending = await orm.em.fork().find(BillableMetric, { backfillStatus: 'RUNNING' });
  for (const m of pending) {
    await startOnce(() => client.workflow.start(metricBackfillWorkflow, {
      workflowId: metricBackfillWorkflowId(m.id), taskQueue, args: [{ metricId: m.id }],
      workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
    }));
  }
}
