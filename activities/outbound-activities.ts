import { ApplicationFailure, Context, log } from '@temporalio/activity';
import { WorkflowIdReusePolicy } from '@temporalio/client';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import { evaluateDirty, markEndedWindows } from '../db/alerts.js';
import { Customer } from '../db/entities.js';
import { loadNotification, markDispatched, notificationBody, resolveEndpoints, undispatched } from '../db/notifications.js';
import { deliveryStatus, endDelivery, loadWebhookEndpoint, recordDeliveryAttempt } from '../db/webhooks.js';
import { renderAlertEmail } from '../integrations/email/alert-email.js';
import { sendWebhook } from '../integrations/webhooks/send.js';
import { DEFAULT_WEBHOOK_SETTINGS } from '../stack/config.js';
import { crashPoint } from '../workers/failpoints.js';
import { listenForWork, OUTBOUND_CHANNEL } from '../db/wakeup.js';
import type { NotificationWorkflowInput } from '../workflows/notification.js';
import { ContractIdKey, CustomerIdKey, LifecycleStateKey, notificationWorkflowId, rechargeWorkflowId, spendThresholdWorkflowId } from '../workflows/search-attributes.js';
import { markGatedCommitStarted, markRechargeStarted, unstartedGatedCommits, unstartedRecharges } from '../db/recharge.js';
import { startCommitPayment, startCrmSync, tellContractWorkflow } from './workflow-starts.js';
import { queuedContractTells } from '../db/contract-tells.js';
import { crmLinkedCustomers } from '../db/crm.js';
import type { EntityManager } from '@mikro-orm/postgresql';
import type { Client } from '@temporalio/client';
import type { ActivityDeps } from './index.js';
import { classified } from './failures.js';
import { sendOnce } from './send-once.js';

/** Customers evaluated per transaction; notifications resolved/dispatched per round. */
const EVALUATE_BATCH = 200;
const DISPATCH_BATCH = 200;
const DISPATCH_CONCURRENCY = 16;
/** The dispatcher's own first attempt of a delivery; slower receivers are retried by the workflow. */
const FIRST_ATTEMPT_TIMEOUT_MS = 2_000;
const IDLE_SLEEP_MS = 25;
const MAX_IDLE_SLEEP_MS = 1_000;
const WINDOW_SWEEP_MS = 30_000;
/** A contract change's tell older than this was not made by the API (Temporal was unreachable): made here. */
const QUEUED_TELL_AGE_MS = 5_000;

/** Notifications that change what the CRM shows about the customer: each tells its crm-sync workflow. */
const CRM_NOTIFICATION_TYPES = new Set(['accrue.contract.lifecycle_changed', 'contract.create', 'contract.end', 'invoice.finalized', 'accrue.invoice.payment_status_changed', 'accrue.invoice.refunded']);

export function createOutboundActivities({ orm, mailer, webhooks, hubspot }: ActivityDeps) {
  const settings = { ...DEFAULT_WEBHOOK_SETTINGS, ...webhooks };

  /**
   * One delivery attempt of a notification to an endpoint: the same id and body every time,
   * signed at send time; the attempt is recorded (status code or error, when the next is due).
   */
  async function attemptDelivery(notificationId: string, endpointId: string, opts: { nextAt: Date | null; timeoutMs?: number }): Promise<{ status: 'DELIVERED' | 'FAILED_ATTEMPT' | 'DONE'; reason: string }> {
    const em = orm.em.fork();
    const status = await deliveryStatus(em, notificationId, endpointId);
    if (status === 'DELIVERED') return { status: 'DELIVERED', reason: '' };
    if (status !== 'PENDING') return { status: 'DONE', reason: `delivery is ${status ?? 'unknown'}` };
    const [n, endpoint] = await Promise.all([loadNotification(em, notificationId), loadWebhookEndpoint(em, endpointId)]);
    if (!n || !endpoint) throw ApplicationFailure.nonRetryable(`notification ${notificationId} or endpoint ${endpointId} not found`, 'NotFound');
    if (endpoint.status !== 'active') {
      await endDelivery(em, notificationId, endpointId, 'SKIPPED', 'the endpoint was archived');
      return { status: 'DONE', reason: 'endpoint archived' };
    }
    const attempt = await sendWebhook(new URL(endpoint.url), notificationBody(n), endpoint.secret, { allowPrivate: settings.allowPrivate, ...(opts.timeoutMs ? { timeoutMs: opts.timeoutMs } : {}) });
    await recordDeliveryAttempt(em, { notificationId, endpointId, ok: attempt.ok, statusCode: attempt.statusCode, error: attempt.error, nextAttemptAt: attempt.ok ? null : opts.nextAt });
    if (attempt.ok) return { status: 'DELIVERED', reason: '' };
    return { status: 'FAILED_ATTEMPT', reason: attempt.statusCode ? `the endpoint answered ${attempt.statusCode}` : `no answer: ${attempt.error}` };
  }

  return {
    /**
     * Evaluates alerts of marked customers and dispatches new notifications, round after round for
     * `runForMs`, heartbeating between rounds. Each round's steps commit on their own and are
     * idempotent, so a killed worker loses nothing: marks stay until evaluated, a notification
     * stays undispatched until its workflow has started (fixed id: started at most once).
     */
    async runOutbound({ runForMs }: { runForMs: number }): Promise<{ rounds: number; evaluated: number; fired: number; dispatched: number }> {
      const ctx = Context.current();
      const client = ctx.client;
      const taskQueue = ctx.info.taskQueue;
      const until = Date.now() + runForMs;
      const total = { rounds: 0, evaluated: 0, fired: 0, dispatched: 0 };
      let stop = false;
      // Idle loops sleep longer and longer (up to MAX_IDLE_SLEEP_MS), and wake at once when a
      // transaction leaves them work (db/wakeup.ts) or the activity is cancelled.
      const waiter = await listenForWork(orm.config.get('clientUrl')!, OUTBOUND_CHANNEL);
      void ctx.cancelled.catch(() => {
        stop = true;
      });
      const napper = () => {
        let idleMs = IDLE_SLEEP_MS;
        return {
          busy: () => { idleMs = IDLE_SLEEP_MS; },
          nap: async () => {
            await waiter.wait(idleMs);
            idleMs = Math.min(idleMs * 2, MAX_IDLE_SLEEP_MS);
          },
        };
      };
      // Two loops side by side, so a long evaluation round never holds up deliveries.
      const evaluate = async () => {
        const { busy, nap } = napper();
        let lastSweep = 0;
        while (!stop && Date.now() < until) {
          const em = orm.em.fork();
          if (Date.now() - lastSweep > WINDOW_SWEEP_MS) {
            await markEndedWindows(em, new Date());
            lastSweep = Date.now();
          }
          const ev = await evaluateDirty(em, { limit: EVALUATE_BATCH });
          // Crash tests: killed after a crossing is recorded, before its notification is dispatched.
          if (ev.fired > 0) crashPoint('@outbound-evaluated');
          await startRecharges(em, client, taskQueue);
          // Each tell on its own: one that fails stays queued for the next round, the rest go on.
          for (const t of await queuedContractTells(em, QUEUED_TELL_AGE_MS, 50)) {
            try {
              await tellContractWorkflow(client, taskQueue, em, t.contractId, t.token);
            } catch (err) {
              log.warn('could not tell a contract workflow of its change; retried next round', { contractId: t.contractId, reason: (err as Error).message });
            }
          }
          total.rounds++;
          total.evaluated += ev.customers;
          total.fired += ev.fired;
          ctx.heartbeat(total);
          if (ev.customers === 0) await nap();
          else busy();
        }
      };
      const dispatch = async () => {
        const { busy, nap } = napper();
        while (!stop && Date.now() < until) {
          const em = orm.em.fork();
          await resolveEndpoints(em, DISPATCH_BATCH);
          const ready = await undispatched(em, DISPATCH_BATCH);
          const started: string[] = [];
          // HubSpot-linked customers' changes go to their crm-sync workflows (before the
          // notification is marked dispatched, so a killed worker tells them again).
          const crmCustomers = hubspot?.accessToken ? await crmLinkedCustomers(em, ready.filter((n) => n.customerId && CRM_NOTIFICATION_TYPES.has(n.type)).map((n) => n.customerId!)) : new Set<string>();
          const crmTold = new Set<string>();
          let i = 0;
          await Promise.all(Array.from({ length: Math.min(DISPATCH_CONCURRENCY, ready.length) }, async () => {
            for (let k = i++; k < ready.length; k = i++) {
              const n = ready[k]!;
              const email = n.type.startsWith('alerts.') && n.customerEmail;
              // The first attempt of each delivery is made here, at once (short timeout); only
              // what it did not deliver — and alert emails — go to the notification's workflow,
              // which retries with backoff. Killed before marking it dispatched, the next round
              // attempts again with the same id (at-least-once).
              const pending: string[] = [];
              for (const endpointId of n.endpointIds) {
                const r = await attemptDelivery(n.id, endpointId, { nextAt: new Date(Date.now() + settings.retryInitialMs), timeoutMs: FIRST_ATTEMPT_TIMEOUT_MS });
                if (r.status === 'FAILED_ATTEMPT') pending.push(endpointId);
                // Crash tests: killed after a delivery is recorded, before the notification is marked dispatched.
                if (r.status === 'DELIVERED') crashPoint('@outbound-delivered');
              }
              if (n.customerId && crmCustomers.has(n.customerId) && CRM_NOTIFICATION_TYPES.has(n.type) && !crmTold.has(n.customerId)) {
                crmTold.add(n.customerId);
                await startCrmSync(client, taskQueue, n.customerId, n.type);
              }
              if (pending.length || email) {
                const input: NotificationWorkflowInput = {
                  notificationId: n.id, endpointIds: pending, email,
                  retry: { initialMs: settings.retryInitialMs, maxIntervalMs: settings.retryMaxIntervalMs, forMs: settings.retryForMs },
                };
                try {
                  await client.workflow.start('notificationWorkflow', {
                    workflowId: notificationWorkflowId(n.id), taskQueue, args: [input],
                    workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
                  });
                } catch (err) {
                  if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
                }
              }
              started.push(n.id);
            }
          }));
          await markDispatched(em, started);
          total.dispatched += started.length;
          ctx.heartbeat(total);
          if (!ready.length) await nap();
          else busy();
        }
      };
      const guarded = (loop: () => Promise<void>) => loop().catch((err: unknown) => {
        stop = true; // the other loop ends too; the activity fails and Temporal retries it
        throw err;
      });
      try {
        await Promise.all([guarded(evaluate), guarded(dispatch)]);
      } finally {
        await waiter.close();
      }
      return total;
    },

    /**
     * One delivery attempt of a notification to an endpoint: the same id and body every time,
     * signed at send time. Records the attempt (status code or error, when the next one is due);
     * a non-2xx answer or no answer fails the attempt so Temporal retries it with backoff.
     */
    async deliverWebhook({ notificationId, endpointId, retry }: { notificationId: string; endpointId: string; retry: NotificationWorkflowInput['retry'] }): Promise<{ delivered: boolean; reason?: string }> {
      const info = Context.current().info;
      const next = Math.min(retry.initialMs * 2 ** (info.attempt - 1), retry.maxIntervalMs);
      const nextAt = Date.now() + next < info.scheduledTimestampMs + retry.forMs ? new Date(Date.now() + next) : null;
      const r = await attemptDelivery(notificationId, endpointId, { nextAt });
      if (r.status !== 'FAILED_ATTEMPT') return { delivered: r.status === 'DELIVERED', ...(r.reason ? { reason: r.reason } : {}) };
      log.warn('webhook delivery failed; Temporal retries it', { notificationId, endpointId, attempt: info.attempt, reason: r.reason });
      throw ApplicationFailure.retryable(r.reason, 'WebhookDeliveryFailed');
    },

    async endWebhookDelivery({ notificationId, endpointId, error }: { notificationId: string; endpointId: string; error: string }): Promise<void> {
      await endDelivery(orm.em.fork(), notificationId, endpointId, 'FAILED', error);
    },

    /** Emails an alert's crossing to the customer's billing contact, once per notification. */
    async emailAlert({ notificationId }: { notificationId: string }): Promise<{ sent: boolean; reason?: string }> {
      return classified(async () => {
        const em = orm.em.fork();
        const n = await loadNotification(em, notificationId);
        if (!n?.customerId) return { sent: false, reason: 'not a customer notification' };
        const customer = await em.findOne(Customer, { id: n.customerId });
        if (!customer?.billingEmail) return { sent: false, reason: 'customer has no billing_email' };
        const mail = renderAlertEmail({ notificationId: n.id, to: customer.billingEmail, customerName: customer.name, properties: n.properties });
        return sendOnce(em, mailer, mail, { table: 'alert_email', key: { notification_id: n.id } });
      });
    },
  };
}

/**
 * Starts `recharge/<contract>/<n>` for every recharge an evaluation recorded and no one started
 * yet (a worker killed in between leaves the row for the next round). The workflow id makes a
 * second start a no-op; the row is marked after.
 */
async function startRecharges(em: EntityManager, client: Client, taskQueue: string): Promise<number> {
  const rows = await unstartedRecharges(em, 50);
  for (const r of rows) {
    try {
      await client.workflow.start('rechargeWorkflow', {
        workflowId: r.kind === 'prepaid' ? rechargeWorkflowId(r.contractId, r.n) : spendThresholdWorkflowId(r.contractId, r.n), taskQueue,
        args: [r.kind === 'prepaid' ? { contractId: r.contractId, n: r.n } : { contractId: r.contractId, n: r.n, kind: r.kind }],
        workflowIdReusePolicy: 'REJECT_DUPLICATE',
        typedSearchAttributes: [{ key: CustomerIdKey, value: r.customerId }, { key: ContractIdKey, value: r.contractId }, { key: LifecycleStateKey, value: 'RECHARGING' }],
      });
    } catch (err) {
      if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
    }
    await markRechargeStarted(em, r.contractId, r.n, r.kind);
  }
  // Payment-gated commits whose start the API could not make (Temporal was down at the time).
  const gated = await unstartedGatedCommits(em, 50);
  for (const g of gated) {
    await startCommitPayment(client, taskQueue, g);
    await markGatedCommitStarted(em, g.grantId);
  }
  return rows.length + gated.length;
}
