import { defineQuery, defineSignal } from '@temporalio/workflow';
import type { LifecyclePhase, LifecycleState } from '../billing/lifecycle.js';

/** Messages of the contract workflow (`contract/<contract_id>`); the workflow re-exports them. */
export interface ContractWorkflowInput {
  contractId: string;
  /** Next period to close; set by continue-as-new. */
  nextPeriodIndex?: number;
  /** The lifecycle so far; set by continue-as-new (absent on a first run or from an older build's run). */
  lifecycle?: LifecycleCarry;
}

export interface LifecycleCarry {
  phase: LifecyclePhase;
  overdue: string[];
  /** Next transition number of the PostgreSQL log. */
  seq: number;
  since: string;
  /** Notices sent that no state records (e.g. `trial_started`, `trial_reminder`). */
  done: string[];
}

export interface ContractWorkflowState {
  nextPeriodIndex: number;
  nextCloseAt: string | null;
  state: 'ACTIVE' | 'ENDED' | 'ARCHIVED';
  /** Earlier periods whose invoice is not closed yet (as of the last sweep), by period start. */
  unclosedPeriods: string[];
  /** Closes this run started again after they failed or were terminated. */
  restartedCloses: number;
}

export interface LifecycleStateView {
  state: LifecycleState;
  since: string;
  phase: LifecyclePhase;
  /** Finalized invoices past due and not paid or voided. */
  overdue: string[];
  /** When the workflow next wakes for the lifecycle (trial end, renewal notice, end date, a due date). */
  nextLifecycleAt: string | null;
}

export const contractStateQuery = defineQuery<ContractWorkflowState>('contractState');
export const lifecycleStateQuery = defineQuery<LifecycleStateView>('lifecycleState');
/** The contract's end date changed or it was archived: reload the plan (sent by the API). */
export const contractChangedSignal = defineSignal('contractChanged');
/**
 * A payment was recorded on, or a void changed, one of the contract's finalized invoices: the
 * workflow re-reads its invoices' payment states (`invoicePaymentStates`) to enter or leave
 * ARREARS. Sent by the API after the change is committed; harmless when nothing changed.
 */
export const invoicePaymentChangedSignal = defineSignal('invoicePaymentChanged');
