import { ApplicationFailure, Context, log } from '@temporalio/activity';
import { WorkflowIdReusePolicy } from '@temporalio/client';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import { evaluateDirty, markEndedWindows } from '../db/alerts.js';
import { Customer } from '../db/entities.js';
import { loadNotification, markDispatched, notificationBody, resolveEndpoints, undispatched, type UndispatchedNotification } from '../db/notifications.js';
import { deliveryStatus, endDelivery, loadWebhookEndpoint, recordDeliveryAttempt } from '../db/webhooks.js';
import { renderAlertEmail } from '../integrations/email/alert-email.js';
import { ConcurrencyBudgets } from '../integrations/webhooks/endpoint-budget.js';
import { sendWebhook } from '../integrations/webhooks/send.js';
import { DEFAULT_WEBHOOK_SETTINGS } from '../stack/config.js';
import { crashPoint } from '../workers/failpoints.js';
import { listenForWork, OUTBOUND_CHANNEL } from '../db/wakeup.js';
import { ContractIdKey, CustomerIdKey, LifecycleStateKey, notificationWorkflowId, rechargeWorkflowId, spendThresholdWorkflowId } from '../workflows/search-attributes.js';
import { markGatedCommitStarted, markRechargeStarted, unstartedGatedCommits, unstartedRecharges } from '../db/recharge.js';
import { tellContractWorkflow } from '../operations/contracts/tell-contract-workflow.js';
import { startCrmSync } from '../operations/crm/start-crm-sync.js';
import { startCommitPayment } from '../operations/payments/start-commit-payment.js';
import { queuedContractTells } from '../db/contract-tells.js';
import { crmLinkedCustomers } from '../db/crm.js';
import type { EntityManager } from '@mikro-orm/postgresql';
import type { Client } from '@temporalio/client';
import type { ActivityDeps } from './deps.js';
import { classified } from './failures.js';
import { sendOnce } from './send-once.js';

/** Customers evaluated per transaction; notifications resolved/dispatched per round. */
const EVALUATE_BATCH = 200;
const DISPATCH_BATCH = 200;
/** Notifications one dispatcher works on at once (fetched, not yet marked dispatched). */
const DISPATCH_IN_FLIGHT = 1_000;
/** Workflow starts (and CRM signals) the dispatcher makes at once. */
const START_CONCURRENCY = 16;
/** How long a retry waits for a place in its endpoint's budget before it reports the endpoint busy. */
const RETRY_BUDGET_WAIT_MS = 1_000;
/** How often a retry waiting for its endpoint's budget (or sending) heartbeats. */
const HEARTBEAT_MS = 5_000;
const IDLE_SLEEP_MS = 25;
const MAX_IDLE_SLEEP_MS = 1_000;
const WINDOW_SWEEP_MS = 30_000;
/** A contract change's tell older than this was not made by the API (Temporal was unreachable): made here. */
const QUEUED_TELL_AGE_MS = 5_000;

/** Notifications that change what the CRM shows about the customer: each tells its crm-sync workflow. */
const CRM_NOTIFICATION_TYPES = new Set(['accrue.contract.lifecycle_changed', 'contract.create', 'contract.end', 'invoice.finalized', 'accrue.invoice.payment_status_changed', 'accrue.invoice.refunded']);

/**
 * What `notification/<id>` is started with: the input of workflows/notification.ts, spelled here
 * because that workflow imports these activities (test/layering.test.ts checks the two agree).
 */
export interface NotificationStart {
  notificationId: string;
  endpointIds: string[];
  email: boolean;
  retry: { initialMs: number; maxIntervalMs: number; forMs: number };
}

export function createOutboundActivities({ orm, mailer, webhooks, hubspot }: ActivityDeps) {
  const settings = { ...DEFAULT_WEBHOOK_SETTINGS, ...webhooks };

  // Each endpoint's own concurrency budget in this process, shared by the dispatcher's first
  // attempts and the retry activities: a slow or dead receiver holds only its own deliveries.
  const budgets = new ConcurrencyBudgets(settings.endpointConcurrency);

  /**
   * One delivery attempt of a notification to an endpoint: the same id and body every time,
   * signed at send time; the attempt is recorded (status code or error, when the next is due).
   * It needs a place in the endpoint's budget: with `deadline` (the dispatcher's first attempt)
   * waiting for it and the answer together get until then, otherwise the wait is short and the
   * send gets its own timeout. BUSY: no place freed up, nothing was sent or recorded.
   */
  async function attemptDelivery(notificationId: string, endpointId: string, opts: { nextAt: Date | null | ((busyMs: number) => Date | null); deadline?: number; signal?: AbortSignal; waitForPlace?: () => Promise<{ release: () => void; busyMs: number }> }): Promise<{ status: 'DELIVERED' | 'FAILED_ATTEMPT' | 'DONE' | 'BUSY'; reason: string }> {
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
    const busy = { status: 'BUSY' as const, reason: `the endpoint already has ${budgets.inUse(endpointId)} deliveries in flight (its budget is ${settings.endpointConcurrency})` };
    let busyMs = 0;
    let release: (() => void) | null;
    if (opts.waitForPlace) ({ release, busyMs } = await opts.waitForPlace());
    else release = await budgets.acquire(endpointId, opts.deadline !== undefined ? opts.deadline - Date.now() : RETRY_BUDGET_WAIT_MS);
    if (!release) return busy;
    let attempt;
    try {
      const timeoutMs = opts.deadline !== undefined ? opts.deadline - Date.now() : undefined;
      if (timeoutMs !== undefined && timeoutMs < 1) return busy;
      attempt = await sendWebhook(new URL(endpoint.url), notificationBody(n), endpoint.secret, { allowPrivate: settings.allowPrivate, ...(timeoutMs !== undefined ? { timeoutMs } : {}), ...(opts.signal ? { signal: opts.signal } : {}) });
    } finally {
      release();
    }
    await recordDeliveryAttempt(em, { notificationId, endpointId, ok: attempt.ok, statusCode: attempt.statusCode, error: attempt.error, nextAttemptAt: attempt.ok ? null : typeof opts.nextAt === 'function' ? opts.nextAt(busyMs) : opts.nextAt });
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
      // Each notification is dispatched on its own, its endpoints side by side, each delivery in
      // its endpoint's budget: a slow receiver never holds up another endpoint's deliveries nor
      // the next rounds. Its first attempt is made here, at once (FIRST_ATTEMPT_TIMEOUT in all);
      // only what it did not deliver — and alert emails — go to the notification's workflow,
      // which retries with backoff. A notification is marked dispatched once that is done;
      // killed before, the next round attempts again with the same id (at-least-once).
      const dispatch = async () => {
        const { busy, nap } = napper();
        const starts = new ConcurrencyBudgets(START_CONCURRENCY);
        const held = new Set<string>(); // taken by this loop and not marked dispatched yet
        const finished: string[] = [];
        const running = new Set<Promise<void>>();
        let failure: { err: unknown } | undefined;
        const limited = async <T>(fn: () => Promise<T>): Promise<T> => {
          const release = (await starts.acquire('start', Infinity))!;
          try {
            return await fn();
          } finally {
            release();
          }
        };
        const dispatchOne = async (n: UndispatchedNotification, crm: { linked: Set<string>; told: Set<string> }) => {
          const email = n.type.startsWith('alerts.') && n.customerEmail;
          const deadline = Date.now() + settings.firstAttemptTimeoutMs;
          const pending: string[] = [];
          await Promise.all(n.endpointIds.map(async (endpointId) => {
            const r = await attemptDelivery(n.id, endpointId, { nextAt: new Date(Date.now() + settings.retryInitialMs), deadline, signal: ctx.cancellationSignal });
            if (r.status === 'FAILED_ATTEMPT' || r.status === 'BUSY') pending.push(endpointId);
            // Crash tests: killed after a delivery is recorded, before the notification is marked dispatched.
            if (r.status === 'DELIVERED') crashPoint('@outbound-delivered');
          }));
          // HubSpot-linked customers' changes go to their crm-sync workflows (before the
          // notification is marked dispatched, so a killed worker tells them again).
          if (n.customerId && crm.linked.has(n.customerId) && CRM_NOTIFICATION_TYPES.has(n.type) && !crm.told.has(n.customerId)) {
            crm.told.add(n.customerId);
            await limited(() => startCrmSync(client, taskQueue, n.customerId!, n.type));
          }
          if (pending.length || email) {
            const input: NotificationStart = {
              notificationId: n.id, endpointIds: pending.sort(), email,
              retry: { initialMs: settings.retryInitialMs, maxIntervalMs: settings.retryMaxIntervalMs, forMs: settings.retryForMs },
            };
            await limited(async () => {
              try {
                await client.workflow.start('notificationWorkflow', {
                  workflowId: notificationWorkflowId(n.id), taskQueue, args: [input],
                  workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
                });
              } catch (err) {
                if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
              }
            });
          }
        };
        const markFinished = async () => {
          if (!finished.length) return;
          const ids = finished.splice(0);
          await markDispatched(orm.em.fork(), ids);
          for (const id of ids) held.delete(id);
          total.dispatched += ids.length;
        };
        try {
          while (!stop && !failure && Date.now() < until) {
            const em = orm.em.fork();
            await markFinished();
            await resolveEndpoints(em, DISPATCH_BATCH);
            const room = DISPATCH_IN_FLIGHT - held.size;
            const ready = room > 0 ? await undispatched(em, Math.min(DISPATCH_BATCH, room), [...held]) : [];
            const crm = {
              linked: hubspot?.accessToken ? await crmLinkedCustomers(em, ready.filter((n) => n.customerId && CRM_NOTIFICATION_TYPES.has(n.type)).map((n) => n.customerId!)) : new Set<string>(),
              told: new Set<string>(),
            };
            for (const n of ready) {
              held.add(n.id);
              const task: Promise<void> = dispatchOne(n, crm).then(() => { finished.push(n.id); }, (err: unknown) => {
                held.delete(n.id);
                failure ??= { err };
              }).finally(() => running.delete(task));
              running.add(task);
            }
            ctx.heartbeat(total);
            if (!ready.length) await nap();
            else busy();
          }
        } finally {
          // What is under way finishes (each within its deadline) and is marked, heartbeating meanwhile.
          while (running.size) {
            await Promise.race([Promise.allSettled([...running]), new Promise((r) => setTimeout(r, 1_000))]);
            ctx.heartbeat(total);
          }
          await markFinished();
        }
        if (failure) throw failure.err;
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
    async deliverWebhook({ notificationId, endpointId, retry, waitForPlace }: { notificationId: string; endpointId: string; retry: NotificationStart['retry']; waitForPlace?: boolean }): Promise<{ delivered: boolean; reason?: string }> {
      const ctx = Context.current();
      const { info, cancellationSignal } = ctx;
      const next = Math.min(retry.initialMs * 2 ** (info.attempt - 1), retry.maxIntervalMs);
      if (waitForPlace) {
        // The attempt waits its turn in the endpoint's budget, heartbeating, however long that
        // takes: time spent waiting (kept across attempts in the heartbeat details) does not
        // count toward giving up, only time since the first attempt otherwise.
        const before = (info.heartbeatDetails as { busyMs?: number } | undefined)?.busyMs ?? 0;
        let waited = 0;
        const beat = setInterval(() => ctx.heartbeat({ busyMs: before + waited }), HEARTBEAT_MS);
        try {
          const givesUpAt = (busy: number) => info.scheduledTimestampMs + retry.forMs + busy;
          const r = await attemptDelivery(notificationId, endpointId, {
            signal: cancellationSignal,
            nextAt: (busy) => (Date.now() + next < givesUpAt(before + busy) ? new Date(Date.now() + next) : null),
            waitForPlace: async () => {
              const t0 = Date.now();
              const timer = setInterval(() => { waited = Date.now() - t0; }, 250);
              try {
                const release = await acquireCancellable(budgets, endpointId, cancellationSignal);
                waited = Date.now() - t0;
                return { release, busyMs: waited };
              } finally {
                clearInterval(timer);
              }
            },
          });
          ctx.heartbeat({ busyMs: before + waited });
          if (r.status !== 'FAILED_ATTEMPT') return { delivered: r.status === 'DELIVERED', ...(r.reason ? { reason: r.reason } : {}) };
          if (Date.now() + next >= givesUpAt(before + waited)) throw ApplicationFailure.nonRetryable(r.reason, 'WebhookDeliveryGaveUp');
          log.warn('webhook delivery failed; Temporal retries it', { notificationId, endpointId, attempt: info.attempt, reason: r.reason });
          throw ApplicationFailure.create({ message: r.reason, type: 'WebhookDeliveryFailed', nextRetryDelay: next });
        } finally {
          clearInterval(beat);
        }
      }
      const nextAt = Date.now() + next < info.scheduledTimestampMs + retry.forMs ? new Date(Date.now() + next) : null;
      const r = await attemptDelivery(notificationId, endpointId, { nextAt, signal: cancellationSignal });
      if (r.status === 'BUSY') throw ApplicationFailure.retryable(r.reason, 'WebhookEndpointBusy');
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
 * A place in `key`'s budget, waiting as long as it takes; cancelled, the wait ends with the
 * cancellation, and a place granted after that is handed straight back (never lost).
 */
async function acquireCancellable(budgets: ConcurrencyBudgets, key: string, signal: AbortSignal): Promise<() => void> {
  const place = budgets.acquire(key, Infinity);
  if (signal.aborted) {
    void place.then((release) => release?.());
    throw signal.reason;
  }
  let onAbort!: () => void;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => {
      void place.then((release) => release?.());
      reject(signal.reason as Error);
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return (await Promise.race([place, aborted]))!;
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
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
