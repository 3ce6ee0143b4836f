import { LockMode } from '@mikro-orm/core';
import { periodAt, type BackdatedWrite, type Period, type Schedule } from '../billing/periods.js';
import { NotFoundError } from '../billing/errors.js';
import { BalanceGrant, Contract, Customer, Invoice } from '../db/entities.js';
import { invoiceIdFor } from '../db/ids.js';
import { pgTextArray } from '../db/sql.js';
import { contractSchedule } from '../db/invoices.js';
import { rollOverToSuccessor } from '../db/rollover.js';
import { backdatedWrites } from '../db/backdated-writes.js';
import { latestLifecycle, recordLifecycleTransition, type LifecycleTransitionRow } from '../db/lifecycle.js';
import type { LifecycleState } from '../billing/lifecycle.js';
import { DEFAULT_LIFECYCLE_SETTINGS } from '../stack/config.js';
import { lifecycleTimes, type LifecycleTimes } from '../billing/lifecycle-times.js';
import type { ActivityDeps } from './deps.js';
import { classified } from './failures.js';

export interface ContractPlan {
  customerId: string;
  schedule: Schedule;
  invoiceGracePeriodMs: number;
  /**
   * Writes that backdated the contract's terms (its creation after its start, amendments and added
   * commits or credits starting before they were written): a period's grace counts from the last
   * one reaching into it (`periodClosesAt`). Absent in plans recorded before it existed.
   */
  backdatedWrites?: BackdatedWrite[];
  /** After the contract's end, how long late events can still arrive (ActivityDeps.lateUsageWindowMs). */
  lateUsageWindowMs: number;
  /** An archived contract closes no more periods. */
  archived?: boolean;
  /** When the lifecycle's timers fire, and its last recorded transition. */
  lifecycle: LifecycleTimes & { last?: { state: LifecycleState; since: string; seq: number } };
}

export function createContractActivities({ orm, invoiceGracePeriodMs, lateUsageWindowMs = 34 * 86_400_000, lifecycle }: ActivityDeps) {
  const settings = { ...DEFAULT_LIFECYCLE_SETTINGS, ...lifecycle };
  return {
    /** Read-only: the contract's period schedule and the grace period, recorded in workflow history. */
    async loadContractPlan({ contractId }: { contractId: string }): Promise<ContractPlan> {
      return classified(async () => {
        const contract = await orm.em.fork().findOne(Contract, { id: contractId });
        if (!contract) throw new NotFoundError('contract', contractId);
        const last = (await latestLifecycle(orm.em.fork(), [contractId])).get(contractId);
        return {
          customerId: contract.customerId, schedule: contractSchedule(contract), invoiceGracePeriodMs, lateUsageWindowMs,
          backdatedWrites: await backdatedWrites(orm.em.fork(), contract),
          archived: contract.archivedAt !== null && contract.archivedAt !== undefined,
          lifecycle: { ...lifecycleTimes(contract, settings), ...(last ? { last } : {}) },
        };
      });
    },

    /** Writes one transition of the contract's lifecycle log; idempotent on (contract, seq). */
    async recordLifecycleTransition(row: Omit<LifecycleTransitionRow, 'contractId'> & { contractId: string }): Promise<{ recorded: boolean }> {
      return classified(() => recordLifecycleTransition(orm.em.fork(), row));
    },

    /**
     * Read-only, at the trial's end: does the contract convert to ACTIVE? It does with a commit,
     * with `trial_spec.convert: 'AUTO'`, or (once payments through a billing provider exist) with a
     * billing provider configured for the customer.
     */
    async trialOutcome({ contractId }: { contractId: string }): Promise<{ converts: boolean; reason: string }> {
      return classified(async () => {
        const em = orm.em.fork();
        const contract = await em.findOne(Contract, { id: contractId });
        if (!contract) throw new NotFoundError('contract', contractId);
        if (contract.terms?.trial_spec?.convert === 'AUTO') return { converts: true, reason: "trial_spec.convert is 'AUTO'" };
        const commits = await em.count(BalanceGrant, { contractId, kind: { $in: ['PREPAID', 'POSTPAID'] }, archivedAt: null });
        if (commits > 0) return { converts: true, reason: 'the contract has a commit' };
        return { converts: false, reason: 'no commit, no billing provider and no automatic conversion' };
      });
    },

    /**
     * A trial that does not convert ends the contract: ending_before becomes the trial's end (when
     * it was later or open), so no period after the trial is billed. Idempotent.
     */
    async endContractAtTrialEnd({ contractId }: { contractId: string }): Promise<{ endingBefore: string | null }> {
      return classified(() => orm.em.fork().transactional(async (em) => {
        const contract = await em.findOne(Contract, { id: contractId }, { lockMode: LockMode.PESSIMISTIC_WRITE });
        if (!contract) throw new NotFoundError('contract', contractId);
        const trialEnd = lifecycleTimes(contract, settings).trial?.endsAt;
        if (trialEnd && (!contract.endingBefore || contract.endingBefore.getTime() > Date.parse(trialEnd))) contract.endingBefore = new Date(trialEnd);
        return { endingBefore: contract.endingBefore?.toISOString() ?? null };
      }));
    },

    /**
     * At the contract's end: its commits and credits with a rollover_fraction roll over to the
     * contract that renews or supersedes it. Idempotent (a done rollover is recorded on the grants).
     */
    async rollOverAtContractEnd({ contractId }: { contractId: string }): Promise<{ rolled: number }> {
      return classified(() => rollOverToSuccessor(orm.em.fork(), contractId));
    },

    /**
     * Read-only: the contract's periods before `beforeIndex` whose invoice is not closed yet —
     * not frozen, awaiting approval, or finalized but not emailed to a customer who has a billing
     * email (and whose close did not record that there was none). A voided invoice is closed.
     */
    async unclosedPeriods({ contractId, beforeIndex }: { contractId: string; beforeIndex: number }): Promise<Period[]> {
      return classified(async () => {
        const em = orm.em.fork();
        const contract = await em.findOne(Contract, { id: contractId });
        if (!contract) throw new NotFoundError('contract', contractId);
        const schedule = contractSchedule(contract);
        const periods: Period[] = [];
        for (let i = 0; i < beforeIndex; i++) {
          const p = periodAt(schedule, i);
          if (p) periods.push(p);
        }
        if (!periods.length) return [];
        const invoices = new Map((await em.find(Invoice, { id: { $in: periods.map((p) => invoiceIdFor(contractId, p.start)) } })).map((i) => [i.id, i]));
        const customer = await em.findOne(Customer, { id: contract.customerId });
        const finalized = [...invoices.values()].filter((i) => i.status === 'FINALIZED' && !i.emailedAt).map((i) => i.id);
        const skipped = new Set(finalized.length
          ? (await em.execute<{ id: string }[]>(`select invoice_id::text as id from invoice_email where invoice_id = any(?::uuid[]) and status = 'SKIPPED'`, [pgTextArray(finalized)])).map((r) => r.id)
          : []);
        return periods.filter((p) => {
          const inv = invoices.get(invoiceIdFor(contractId, p.start));
          if (!inv) return true;
          if (inv.status === 'VOID') return false;
          if (inv.status !== 'FINALIZED') return true;
          // Closed once emailed, or once its close found no billing email to send it to.
          return !inv.emailedAt && !skipped.has(inv.id) && !!customer?.billingEmail;
        });
      });
    },

    /** Pure: the period's invoice id, the same one its live draft shows. */
    async invoiceIdForPeriod({ contractId, periodStart }: { contractId: string; periodStart: string }): Promise<string> {
      return invoiceIdFor(contractId, periodStart);
    },
  };
}
