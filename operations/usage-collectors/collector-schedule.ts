import { UnavailableError } from '../../billing/errors.js';
import { usageCollectorWorkflow } from '../../workflows/usage-collector.js';
import { usageCollectorScheduleId } from '../../workflows/search-attributes.js';
import { ScheduleOverlapPolicy, type Client } from '../workflow-client.js';

/**
 * A usage collector runs from a Temporal schedule of its own, `usage-collector/<id>`: created with
 * the collector, triggered by `run`, deleted by `archive`.
 */

/** Creates the schedule; a 503 when Temporal cannot take it (the caller removes the collector again). */
export async function createCollectorSchedule(temporal: Client, taskQueue: string, c: { id: string; intervalSeconds: number }): Promise<void> {
  try {
    await temporal.schedule.create({
      scheduleId: usageCollectorScheduleId(c.id),
      spec: { intervals: [{ every: `${c.intervalSeconds}s` }] },
      action: { type: 'startWorkflow', workflowType: usageCollectorWorkflow, args: [{ collectorId: c.id }], taskQueue, workflowId: `usage-collector-run/${c.id}` },
      policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '1 minute' },
    });
  } catch (err) {
    throw new UnavailableError(`could not create the collector's schedule (nothing was stored, retry): ${(err as Error).message}`);
  }
}

/** Runs the collector now (it still only collects whole windows that have ended). */
export async function triggerCollectorSchedule(temporal: Client, collectorId: string): Promise<void> {
  await temporal.schedule.getHandle(usageCollectorScheduleId(collectorId)).trigger(ScheduleOverlapPolicy.ALLOW_ALL);
}

/** Deletes the schedule; one already gone is fine. */
export async function deleteCollectorSchedule(temporal: Client, collectorId: string): Promise<void> {
  await temporal.schedule.getHandle(usageCollectorScheduleId(collectorId)).delete().catch((err: Error) => {
    if (!/not found/i.test(err.message)) throw err;
  });
}
