import {
  condition, continueAsNew, ParentClosePolicy, patched, proxyActivities, proxyLocalActivities, setHandler, sleep, startChild,
  upsertSearchAttributes, workflowInfo, WorkflowIdReusePolicy, log,
} from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type { Activities } from '../activities/index.js';
import type { ContractPlan } from '../activities/contract-activities.js';
import { transition, visibleState, type LifecycleEvent, type LifecycleHook, type LifecycleSnapshot } from '../billing/lifecycle.js';
import type { Period } from '../billing/periods.js';
import { periodAt, periodClosesAt } from '../billing/periods.js';
import { EMAIL_ACTIVITY_TIMEOUT_MS } from '../integrations/email/limits.js';
import {
  contractChangedSignal, contractStateQuery, invoicePaymentChangedSignal, lifecycleStateQuery,
  type ContractWorkflowInput, type ContractWorkflowState, type LifecycleCarry,
} from './contract-messages.js';
import { legacyContractWorkflow } from './contract-v0.js';
import { invoiceCloseWorkflow, invoiceSettledSignal } from './invoice-close.js';
import { ContractIdKey, CustomerIdKey, InvoiceIdKey, LifecycleStateKey, invoiceWorkflowId } from './search-attributes.js';

export {
  contractChangedSignal, contractStateQuery, invoicePaymentChangedSignal, lifecycleStateQuery,
  type ContractWorkflowInput, type ContractWorkflowState, type LifecycleCarry, type LifecycleStateView,
} from './contract-messages.js';

/**
 * One workflow per contract (`contract/<contract_id>`), from start to end: it tells the contract's
 * story. Two things run in it.
 *
 * Invoice close. It sleeps until each period's end plus the invoice grace period and then closes
 * that period's invoice in a child workflow (`invoice/<invoice_id>`), which lives on by itself
 * (ABANDON) while it waits for finance. A contract that started in the past closes its past
 * periods right away. No period is ever skipped: a close that failed, was terminated or timed out
 * is started again (ALLOW_DUPLICATE_FAILED_ONLY; a running or completed close is left alone). The
 * workflow notices a failed close of its own run at once (the child's result; restarted after
 * 10 s, doubling up to an hour while closes keep failing), and sweeps every earlier period from
 * PostgreSQL (`unclosedPeriods`) at each period close, after a failure, at the start of each run
 * and once a day while one is open. After the last period it waits until every period's invoice
 * is finalized and emailed (or voided), and only then rolls the commits and credits over to the
 * successor contract: the leftover it rolls is the final one.
 *
 * Lifecycle. TRIAL → ACTIVE → RENEWING → ENDED, ARREARS over a live contract while an invoice is
 * overdue, ARCHIVED (billing/lifecycle.ts decides every transition). Timers, not polling: the
 * trial reminder and end, the renewal notice (`renewal_notice_days` before the end date), the end
 * date, and the next due date of an unpaid invoice; payments and voids arrive as a signal. Each
 * visible change is recorded in PostgreSQL (numbered, so a retry writes it once), in the
 * `LifecycleState` search attribute and in the `lifecycleState` query, and fires its hooks (emails
 * now; outbound notifications and CRM sync read the same hooks later). Every email has a key of
 * its own, so a worker killed between two steps never sends one twice.
 *
 * Continue-as-new keeps the history short on long contracts; the lifecycle travels in its input.
 */

const acts = proxyActivities<Activities>({
  startToCloseTimeout: '10 seconds',
  retry: { initialInterval: '1 second', maximumInterval: '1 minute', backoffCoefficient: 2 },
});
// Emails outlive nodemailer's own limits, so no retry overlaps a send in flight (I4).
const mail = proxyActivities<Activities>({
  startToCloseTimeout: EMAIL_ACTIVITY_TIMEOUT_MS,
  retry: { initialInterval: '1 second', maximumInterval: '1 minute', backoffCoefficient: 2 },
});

const localActs = proxyLocalActivities<Activities>({
  startToCloseTimeout: '10 seconds',
  retry: { initialInterval: '1 second', maximumInterval: '1 minute', backoffCoefficient: 2 },
});

const PERIODS_PER_RUN = 24;
/** A failed close is started again after a pause that doubles while closes keep failing (no spin). */
const RESTART_BACKOFF_MS = { first: 10_000, max: 3_600_000 };
/**
 * While an earlier period is open, PostgreSQL is swept this often: a close started by an earlier
 * run is not watched, and a terminated child is not always reported to its parent (Temporal's
 * test server does not).
 */
const SWEEP_MS = 24 * 3_600_000;
/** The patch that added the lifecycle; histories without its marker run `legacyContractWorkflow`. */
export const LIFECYCLE_PATCH = 'lifecycle';
/**
 * The patch after which the workflow is lighter on Temporal: its one-transaction database steps
 * are local activities (run inside the workflow task, recorded as a marker: no task-queue round
 * trip, about a quarter of the events); it asks for each period's invoice id once per run; the
 * sweep before sleeping skips closes this run just started and is watching; and a run that sweeps
 * while invoices wait for approval continues as new when Temporal suggests it. The daily sweep
 * still tries to start every open period's close: that attempt is how a close terminated without
 * its parent hearing of it is noticed. Emails stay normal activities (long timeouts).
 */
export const SWEEP_PATCH = 'accrue-contract-lighter';
/**
 * Two changes made after the lifecycle build (62048a20) without a marker: an expired trial's end
 * date is written before its ENDED transition is recorded (that build wrote it after, from the
 * hook), and payments are no longer read again daily while in arrears (payments and voids signal).
 * Histories of that build carry neither this marker nor SWEEP_PATCH's and keep the old commands;
 * every run made since SWEEP_PATCH has had both changes, so its marker counts as this one. (A run
 * of the builds between the two changes, never continued as new, looks like the lifecycle build's:
 * none was recorded or released.)
 */
export const LIFECYCLE_ORDER_PATCH = 'accrue-trial-end-first-no-arrears-poll';
/**
 * The patch after which a period's grace counts from the later of its end and the last write that
 * backdated terms into it (`periodClosesAt`: a contract created after its first periods ended, an
 * amendment starting in the past), and the plan is read again when a period's close is due (an
 * amendment does not signal), waiting on when it moved. Without it, the grace counts from the
 * period's end only.
 */
export const BACKDATED_GRACE_PATCH = 'accrue-grace-after-backdated-writes';

export async function contractWorkflow(input: ContractWorkflowInput): Promise<void> {
  if (!patched(LIFECYCLE_PATCH)) return legacyContractWorkflow(input);
  const lighterSweep = patched(SWEEP_PATCH);
  const db = lighterSweep ? localActs : acts;
  const lifecycleOrder = patched(LIFECYCLE_ORDER_PATCH) || lighterSweep;
  const backdatedGrace = patched(BACKDATED_GRACE_PATCH);
  const contractId = input.contractId;
  let plan = await db.loadContractPlan({ contractId });
  const state: ContractWorkflowState = { nextPeriodIndex: input.nextPeriodIndex ?? 0, nextCloseAt: null, state: 'ACTIVE', unclosedPeriods: [], restartedCloses: 0 };
  let changed = false;
  let settled = false;
  let closeFailed = false;
  let paymentsDirty = true;
  let failuresInARow = 0;
  const pauseAfterFailure = async () => {
    await sleep(Math.min(RESTART_BACKOFF_MS.first * 2 ** failuresInARow, RESTART_BACKOFF_MS.max));
    failuresInARow++;
  };

  // ---- lifecycle ----
  const life: LifecycleCarry = input.lifecycle ?? await firstRunLifecycle(contractId, plan, db);
  let snapshot: LifecycleSnapshot = { phase: life.phase, overdue: life.overdue };
  const done = new Set(life.done);
  /** The earliest due date of an unpaid invoice not yet overdue (from the last payment read). */
  let nextDueAt: number | undefined;
  /** When payments were last read (histories before LIFECYCLE_ORDER_PATCH read them daily while in arrears). */
  let paymentsReadAt = -Infinity;
  const carry = (): LifecycleCarry => ({ phase: snapshot.phase, overdue: snapshot.overdue, seq: life.seq, since: life.since, done: [...done].sort() });
  const nextRun = () => continueAsNew<typeof contractWorkflow>({ contractId, nextPeriodIndex: state.nextPeriodIndex, lifecycle: carry() });

  setHandler(contractStateQuery, () => state);
  setHandler(lifecycleStateQuery, () => {
    const at = lifecycleDueAt();
    return { state: visibleState(snapshot), since: life.since, phase: snapshot.phase, overdue: snapshot.overdue, nextLifecycleAt: at === undefined ? null : new Date(at).toISOString() };
  });
  setHandler(contractChangedSignal, () => { changed = true; });
  setHandler(invoiceSettledSignal, () => { settled = true; paymentsDirty = true; });
  setHandler(invoicePaymentChangedSignal, () => { paymentsDirty = true; });
  upsertSearchAttributes([{ key: LifecycleStateKey, value: visibleState(snapshot) }]);

  const email = (kind: Parameters<Activities['sendNotificationEmail']>[0]['kind'], key: string, extra: { invoiceId?: string; outcome?: 'converted' | 'expired'; recipient?: 'billing' | 'finance' } = {}) =>
    mail.sendNotificationEmail({ kind, key, contractId, ...extra });

  /** What each hook does today; outbound notifications and CRM sync attach to the same hooks. */
  const fireHooks = async (hooks: LifecycleHook[], overdueInvoiceId: string | undefined) => {
    for (const hook of hooks) {
      if (hook === 'trial_converted') await email('trial_ended', `trial_ended:${contractId}`, { outcome: 'converted' });
      if (hook === 'trial_expired') {
        // Histories before LIFECYCLE_ORDER_PATCH end the contract here, after the transition.
        if (!lifecycleOrder) await db.endContractAtTrialEnd({ contractId });
        changed = true; // the loop plans again with the new end date (written before the transition)
        await email('trial_ended', `trial_ended:${contractId}`, { outcome: 'expired' });
      }
      if (hook === 'renewal_notice') {
        // One notice per end date: an amendment that moves the end date gets a notice of its own.
        const key = `renewal_notice:${contractId}:${plan.schedule.endingBefore ?? ''}`;
        await email('renewal_notice', key);
        await email('renewal_notice', key, { recipient: 'finance' });
      }
    }
    if (overdueInvoiceId) await email('invoice_overdue', `invoice_overdue:${overdueInvoiceId}`, { invoiceId: overdueInvoiceId });
  };

  const apply = async (event: LifecycleEvent) => {
    const before = snapshot;
    const t = transition(snapshot, event);
    snapshot = t.snapshot;
    if (t.change) {
      const at = new Date().toISOString(); // workflow time: deterministic
      await db.recordLifecycleTransition({
        contractId, seq: life.seq, state: t.change.to, from: t.change.from, at, reason: t.change.reason,
        ...(t.change.invoiceId ? { invoiceId: t.change.invoiceId } : {}), hooks: t.hooks,
      });
      life.seq++;
      life.since = at;
      upsertSearchAttributes([{ key: LifecycleStateKey, value: t.change.to }]);
      log.info('lifecycle', { contractId, from: t.change.from, to: t.change.to, reason: t.change.reason });
    }
    // An overdue email for each invoice that newly went overdue on a live contract.
    const overdueInvoiceId = event.type === 'INVOICE_OVERDUE' && snapshot.overdue.length > before.overdue.length ? event.invoiceId : undefined;
    if (t.hooks.length || overdueInvoiceId) await fireHooks(t.hooks, overdueInvoiceId);
  };

  /** Reads the contract's invoices' payment states: overdue ones enter ARREARS, paid or voided ones leave it. */
  const refreshPayments = async () => {
    paymentsDirty = false;
    const now = Date.now();
    paymentsReadAt = now;
    const states = await db.invoicePaymentStates({ contractId });
    const known = new Set(states.map((s) => s.invoiceId));
    nextDueAt = undefined;
    for (const s of states) {
      const due = Date.parse(s.dueAt);
      if (s.settled) await apply({ type: 'INVOICE_SETTLED', invoiceId: s.invoiceId });
      else if (due <= now) await apply({ type: 'INVOICE_OVERDUE', invoiceId: s.invoiceId });
      else nextDueAt = Math.min(nextDueAt ?? due, due);
    }
    for (const id of snapshot.overdue) if (!known.has(id)) await apply({ type: 'INVOICE_SETTLED', invoiceId: id });
  };

  const at = (iso: string | null | undefined) => (iso ? Date.parse(iso) : undefined);
  /** When the lifecycle next needs the workflow awake (undefined: nothing scheduled). */
  const lifecycleDueAt = (): number | undefined => {
    const lc = plan.lifecycle;
    const candidates: (number | undefined)[] = [];
    const p = snapshot.phase;
    if (p === 'TRIAL' && lc.trial) {
      if (!done.has('trial_reminder')) candidates.push(at(lc.trial.reminderAt));
      candidates.push(at(lc.trial.endsAt));
    }
    if (p === 'ACTIVE') candidates.push(at(lc.renewalNoticeAt));
    if (p === 'TRIAL' || p === 'ACTIVE' || p === 'RENEWING') candidates.push(at(plan.schedule.endingBefore));
    if (p === 'ACTIVE' || p === 'RENEWING') candidates.push(nextDueAt);
    if (!lifecycleOrder && snapshot.overdue.length) candidates.push(paymentsReadAt + SWEEP_MS);
    const times = candidates.filter((t): t is number => t !== undefined);
    return times.length ? Math.min(...times) : undefined;
  };
  const lifecycleDue = () => paymentsDirty || (plan.archived === true && snapshot.phase !== 'ARCHIVED') || (lifecycleDueAt() ?? Infinity) <= Date.now()
    || (snapshot.phase === 'RENEWING' && !renewalNoticePassed());
  const renewalNoticePassed = () => {
    const n = at(plan.lifecycle.renewalNoticeAt);
    return n !== undefined && Date.now() >= n;
  };

  /** Everything in the lifecycle that is due now, in the order it happened. */
  const tick = async () => {
    if (plan.archived) {
      await apply({ type: 'ARCHIVED' });
      return;
    }
    const lc = plan.lifecycle;
    const now = Date.now();
    if (snapshot.phase === 'TRIAL' && lc.trial) {
      const endsAt = Date.parse(lc.trial.endsAt);
      if (!done.has('trial_started')) {
        done.add('trial_started');
        await email('trial_started', `trial_started:${contractId}`);
      }
      const reminderAt = at(lc.trial.reminderAt);
      if (reminderAt !== undefined && now >= reminderAt && now < endsAt && !done.has('trial_reminder')) {
        done.add('trial_reminder');
        await email('trial_reminder', `trial_reminder:${contractId}`);
      }
      if (now >= endsAt) {
        const outcome = await db.trialOutcome({ contractId });
        // Not converted: the contract ends with its trial (no further periods are billed, access is
        // gated) — written before the ENDED transition, so whoever sees ENDED sees the end date too.
        if (!outcome.converts && lifecycleOrder) await db.endContractAtTrialEnd({ contractId });
        await apply({ type: 'TRIAL_ENDED', converts: outcome.converts });
      }
    }
    if (snapshot.phase === 'RENEWING' && !renewalNoticePassed()) await apply({ type: 'END_DATE_EXTENDED' });
    const end = at(plan.schedule.endingBefore);
    if (snapshot.phase === 'ACTIVE' && renewalNoticePassed() && (end === undefined || Date.now() < end)) await apply({ type: 'RENEWAL_NOTICE' });
    if (end !== undefined && Date.now() >= end) await apply({ type: 'CONTRACT_ENDED' });
    // Payments and voids signal (the API answers 503 until the signal is delivered, and they are
    // idempotent, so a retried request tells the workflow again); no polling while in arrears.
    const pollDue = !lifecycleOrder && snapshot.overdue.length > 0 && Date.now() >= paymentsReadAt + SWEEP_MS;
    if (paymentsDirty || (nextDueAt !== undefined && Date.now() >= nextDueAt) || pollDue) await refreshPayments();
  };

  /** Sleeps until `untilMs` or a message, waking early for the lifecycle; true when woken before `untilMs`. */
  const napUntil = async (untilMs: number, wakeOn: () => boolean): Promise<boolean> => {
    for (;;) {
      if (lifecycleDue()) await tick();
      if (wakeOn()) return true;
      const now = Date.now();
      if (now >= untilMs) return false;
      const lifeAt = lifecycleDueAt();
      const until = Math.min(untilMs, lifeAt !== undefined && lifeAt > now ? lifeAt : Infinity);
      const woke = await condition(() => wakeOn() || paymentsDirty, until - now);
      if (woke && wakeOn()) return true;
    }
  };

  /** Invoice ids by period start, asked once per run. */
  const invoiceIds = new Map<string, string>();
  /** Period starts whose close this run started and whose result has not come back. */
  const watched = new Set<string>();
  /** Starts the period's close unless one is running or completed; watches it while this run lives. */
  const startClose = async (period: Period, restart: boolean): Promise<void> => {
    let invoiceId = lighterSweep ? invoiceIds.get(period.start) : undefined;
    if (invoiceId === undefined) {
      invoiceId = await db.invoiceIdForPeriod({ contractId, periodStart: period.start });
      invoiceIds.set(period.start, invoiceId);
    }
    try {
      const child = await startChild(invoiceCloseWorkflow, {
        workflowId: invoiceWorkflowId(invoiceId),
        args: [{ invoiceId, contractId, periodStart: period.start, periodEnd: period.end }],
        parentClosePolicy: ParentClosePolicy.ABANDON,
        workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
        typedSearchAttributes: [
          { key: CustomerIdKey, value: plan.customerId },
          { key: ContractIdKey, value: contractId },
          { key: InvoiceIdKey, value: invoiceId },
          { key: LifecycleStateKey, value: 'INVOICE_FREEZING' },
        ],
      });
      if (restart) {
        state.restartedCloses++;
        log.warn('restarted an invoice close that had failed or been terminated', { invoiceId, periodStart: period.start });
      }
      watched.add(period.start);
      child.result().then(() => { settled = true; paymentsDirty = true; }, () => { closeFailed = true; })
        .finally(() => watched.delete(period.start));
    } catch (err) {
      // Running (e.g. started before a continue-as-new) or completed: that close carries on by itself.
      if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
    }
  };

  /**
   * Starts again every earlier period's close that is not closed and not running; returns how many
   * are open. `skipWatched`: leave alone the closes this run started and is watching (the sweep
   * before sleeping, right after starting one); the daily sweep tries them all.
   */
  const sweep = async (skipWatched = false): Promise<number> => {
    closeFailed = false;
    settled = false;
    const open = await db.unclosedPeriods({ contractId, beforeIndex: state.nextPeriodIndex });
    state.unclosedPeriods = open.map((p) => p.start);
    if (!open.length) failuresInARow = 0;
    for (const p of open) if (!(lighterSweep && skipWatched && watched.has(p.start))) await startClose(p, true);
    return open.length;
  };

  let sweptAt = -1;
  for (;;) {
    for (let closedThisRun = 0; ; closedThisRun++) {
      if (plan.archived) break;
      const period = periodAt(plan.schedule, state.nextPeriodIndex);
      if (!period) break;
      const closeAt = backdatedGrace ? periodClosesAt(period, plan.invoiceGracePeriodMs, plan.backdatedWrites) : Date.parse(period.end) + plan.invoiceGracePeriodMs;
      state.nextCloseAt = new Date(closeAt).toISOString();
      if (closeAt > Date.now() && sweptAt !== state.nextPeriodIndex) {
        // Before sleeping to the next close: is every earlier period closed, or closing?
        sweptAt = state.nextPeriodIndex;
        await sweep(true);
      }
      // While an earlier period is open, sweep once a day too (its close may be of an earlier run).
      const wakeAt = state.unclosedPeriods.length ? Math.min(closeAt, Date.now() + SWEEP_MS) : closeAt;
      const woke = await napUntil(wakeAt, () => changed || closeFailed || plan.archived === true);
      if (woke || wakeAt < closeAt) {
        if (changed) {
          // The end date moved or the contract was archived: plan again from the same period.
          changed = false;
          plan = await db.loadContractPlan({ contractId });
        } else if (!plan.archived) {
          if (woke) await pauseAfterFailure();
          await sweep();
          // Daily sweeps while finance takes its time: keep the run's history bounded here too.
          if (lighterSweep && workflowInfo().continueAsNewSuggested) await nextRun();
        }
        closedThisRun--;
        continue;
      }
      if (backdatedGrace) {
        // Terms written since the plan was read (an amendment reaching into this period) may move the close.
        plan = await db.loadContractPlan({ contractId });
        if (plan.archived || periodClosesAt(period, plan.invoiceGracePeriodMs, plan.backdatedWrites) > Date.now()) {
          closedThisRun--;
          continue;
        }
      }
      await startClose(period, false);
      state.nextPeriodIndex++;
      if (closedThisRun + 1 >= PERIODS_PER_RUN || workflowInfo().continueAsNewSuggested) await nextRun();
    }
    if (plan.archived) break;
    // Every period is closing: wait until each invoice is final (finalized and emailed, or voided).
    state.nextCloseAt = null;
    if (await sweep() === 0) break;
    const woke = await napUntil(Date.now() + SWEEP_MS, () => changed || settled || closeFailed);
    if (woke && closeFailed) await pauseAfterFailure();
    else if (woke) failuresInARow = 0;
    if (changed) {
      changed = false;
      plan = await db.loadContractPlan({ contractId });
    }
    if (workflowInfo().continueAsNewSuggested) await nextRun();
  }
  if (lifecycleDue()) await tick();
  if (!plan.archived) await db.rollOverAtContractEnd({ contractId });
  state.state = plan.archived ? 'ARCHIVED' : 'ENDED';
  state.nextCloseAt = null;
  if (plan.archived || !plan.schedule.endingBefore) return;

  // Late events for the contract's periods are accepted for the ingest window after its end. Once
  // it has passed, late usage that no renewal bills goes on a late-usage invoice of its own.
  const lateUsageAt = Date.parse(plan.schedule.endingBefore) + plan.lateUsageWindowMs + plan.invoiceGracePeriodMs;
  state.nextCloseAt = new Date(lateUsageAt).toISOString();
  if (await napUntil(lateUsageAt, () => changed)) {
    // The end date moved or the contract was archived meanwhile: plan again.
    await nextRun();
  }
  state.nextCloseAt = null;
  const late = await db.freezeLateUsageInvoice({ contractId });
  if (!late) return;
  try {
    // The contract's story ends with its late-usage invoice final (or its close failed: logged).
    const child = await startChild(invoiceCloseWorkflow, {
      workflowId: invoiceWorkflowId(late.invoiceId),
      args: [{ invoiceId: late.invoiceId, contractId, periodStart: late.periodStart, periodEnd: late.periodEnd }],
      parentClosePolicy: ParentClosePolicy.ABANDON,
      workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
      typedSearchAttributes: [
        { key: CustomerIdKey, value: plan.customerId },
        { key: ContractIdKey, value: contractId },
        { key: InvoiceIdKey, value: late.invoiceId },
        { key: LifecycleStateKey, value: 'INVOICE_FREEZING' },
      ],
    });
    await child.result().catch((err: unknown) => log.warn('the late-usage invoice close failed', { invoiceId: late.invoiceId, error: String(err) }));
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
  }
}

/**
 * The lifecycle on a first run: from the log when there is one (a run restarted after it ended, by
 * signal-with-start), else the state the contract starts in, recorded as transition 0.
 */
async function firstRunLifecycle(contractId: string, plan: ContractPlan, db: typeof acts): Promise<LifecycleCarry> {
  const last = plan.lifecycle.last;
  // Emails already sent are not sent again (each has a key), so `done` can start empty.
  if (last) return { phase: last.state === 'ARREARS' ? 'ACTIVE' : last.state, overdue: [], seq: last.seq + 1, since: last.since, done: [] };
  const phase = plan.lifecycle.trial ? 'TRIAL' : 'ACTIVE';
  const since = new Date().toISOString();
  await db.recordLifecycleTransition({
    contractId, seq: 0, state: phase, from: null, at: since,
    reason: phase === 'TRIAL' ? 'the contract started with a trial' : 'the contract started', hooks: [],
  });
  return { phase, overdue: [], seq: 1, since, done: [] };
}
