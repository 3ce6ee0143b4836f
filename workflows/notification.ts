import { ActivityFailure, patched, proxyActivities } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import { EMAIL_ACTIVITY_TIMEOUT_MS } from '../integrations/email/limits.js';

/**
 * Delivers one outbound notification (`notification/<id>`): one `deliverWebhook` activity per
 * endpoint fixed for it, in parallel, each retried by Temporal with exponential backoff for up to
 * `retry.forMs` (72 h by default) — the same notification id and body on every attempt — and then
 * marked FAILED, visible in the endpoint's deliveries. Alerts also email the customer's billing
 * contact (once, by notification id). A slow or dead receiver holds only its own activity: rating
 * and alert evaluation never wait for it.
 */
export interface NotificationWorkflowInput {
  notificationId: string;
  endpointIds: string[];
  email: boolean;
  retry: { initialMs: number; maxIntervalMs: number; forMs: number };
}

const acts = proxyActivities<Activities>({
  startToCloseTimeout: '10 seconds',
  retry: { initialInterval: '1 second', maximumInterval: '1 minute', backoffCoefficient: 2 },
});
const mail = proxyActivities<Activities>({
  startToCloseTimeout: EMAIL_ACTIVITY_TIMEOUT_MS,
  retry: { initialInterval: '1 second', maximumInterval: '1 minute', backoffCoefficient: 2 },
});

const BUSY_WAITS_PATCH = 'webhook-busy-waits';

export async function notificationWorkflow(input: NotificationWorkflowInput): Promise<{ delivered: number; failed: number }> {
  // With the patch, an attempt that finds its endpoint's budget full waits its turn (heartbeating)
  // instead of failing: such waits never count toward giving up, which the activity decides
  // (time since the first attempt, less the waits, past `retry.forMs`) — so there is no
  // schedule-to-close timeout, and a killed worker is noticed by the missing heartbeats.
  const waitForPlace = patched(BUSY_WAITS_PATCH);
  const send = proxyActivities<Activities>(waitForPlace ? {
    startToCloseTimeout: Math.max(input.retry.forMs, 60_000),
    heartbeatTimeout: '30 seconds',
    retry: { initialInterval: input.retry.initialMs, maximumInterval: input.retry.maxIntervalMs, backoffCoefficient: 2, nonRetryableErrorTypes: ['WebhookDeliveryGaveUp'] },
  } : {
    // The send's own timeout is 10 s; this one is also how an attempt on a killed worker is noticed.
    startToCloseTimeout: '15 seconds',
    scheduleToCloseTimeout: input.retry.forMs,
    retry: { initialInterval: input.retry.initialMs, maximumInterval: input.retry.maxIntervalMs, backoffCoefficient: 2 },
  });
  let delivered = 0;
  let failed = 0;
  await Promise.all([
    ...input.endpointIds.map(async (endpointId) => {
      try {
        const r = await send.deliverWebhook({ notificationId: input.notificationId, endpointId, retry: input.retry, ...(waitForPlace ? { waitForPlace } : {}) });
        if (r.delivered) delivered++;
      } catch (err) {
        failed++;
        const reason = err instanceof ActivityFailure ? (err.cause?.message ?? err.message) : String(err);
        await acts.endWebhookDelivery({ notificationId: input.notificationId, endpointId, error: `gave up: ${reason}` });
      }
    }),
    ...(input.email ? [mail.emailAlert({ notificationId: input.notificationId })] : []),
  ]);
  return { delivered, failed };
}
