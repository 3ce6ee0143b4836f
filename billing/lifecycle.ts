/**
 * A contract's lifecycle: the one place that decides its state. Pure: the contract
 * workflow keeps a `LifecycleSnapshot`, feeds it the events it observes (timers, payments,
 * finalized invoices, archive) and records what `transition` returns — the state change (for the
 * `LifecycleState` search attribute and the transition log) and the hooks to fire (email,
 * outbound notification, CRM sync), which later issues implement.
 *
 *   TRIAL ──trial ends, converts──▶ ACTIVE ──renewal notice──▶ RENEWING ──end date──▶ ENDED
 *     └──trial ends, no conversion──────────────────────────────────────────────────▶ ENDED
 *   ACTIVE / RENEWING ──an invoice overdue──▶ ARREARS ──every overdue invoice paid or voided──▶ back
 *   any ──archive──▶ ARCHIVED
 *
 * ARREARS is a standing over ACTIVE or RENEWING, not a phase of its own: the contract keeps its
 * phase underneath (a renewal notice or the end date can pass while it is in arrears), and leaving
 * arrears returns to whatever the phase is by then. Events that do not apply to the current state
 * (a second renewal notice, a payment for an invoice that was not overdue) change nothing, so a
 * replayed or duplicated event is harmless.
 */
export type LifecyclePhase = 'TRIAL' | 'ACTIVE' | 'RENEWING' | 'ENDED' | 'ARCHIVED';
export type LifecycleState = LifecyclePhase | 'ARREARS';

export interface LifecycleSnapshot {
  phase: LifecyclePhase;
  /** Finalized invoices past their due date and not yet paid or voided, by id (sorted). */
  overdue: string[];
}

export type LifecycleEvent =
  | { type: 'TRIAL_ENDED'; converts: boolean }
  | { type: 'RENEWAL_NOTICE' }
  /** The end date moved later than the renewal notice point (an amendment during RENEWING). */
  | { type: 'END_DATE_EXTENDED' }
  | { type: 'CONTRACT_ENDED' }
  | { type: 'INVOICE_OVERDUE'; invoiceId: string }
  /** Paid in full or voided. */
  | { type: 'INVOICE_SETTLED'; invoiceId: string }
  | { type: 'ARCHIVED' };

export type LifecycleHook =
  | 'trial_converted' | 'trial_expired' | 'renewal_notice' | 'renewal_withdrawn' | 'contract_ended'
  | 'arrears_entered' | 'arrears_left' | 'contract_archived';

export interface LifecycleTransition {
  snapshot: LifecycleSnapshot;
  /** The visible state changed: from → to, why, and the invoice that caused it (if one did). */
  change: { from: LifecycleState; to: LifecycleState; reason: string; invoiceId?: string } | null;
  /** What to tell the customer, finance, outbound webhooks and the CRM about. */
  hooks: LifecycleHook[];
}

/** The state a contract starts in. */
export function initialSnapshot(hasTrial: boolean): LifecycleSnapshot {
  return { phase: hasTrial ? 'TRIAL' : 'ACTIVE', overdue: [] };
}

/** What the contract shows: ARREARS while an invoice is overdue on a live (ACTIVE or RENEWING) contract. */
export function visibleState(s: LifecycleSnapshot): LifecycleState {
  return s.overdue.length && (s.phase === 'ACTIVE' || s.phase === 'RENEWING') ? 'ARREARS' : s.phase;
}

const REASONS: Record<LifecycleEvent['type'], string> = {
  TRIAL_ENDED: 'the trial ended',
  RENEWAL_NOTICE: 'the renewal notice period began',
  END_DATE_EXTENDED: 'the end date moved past the renewal notice period',
  CONTRACT_ENDED: 'the contract reached its end date',
  INVOICE_OVERDUE: 'a finalized invoice is unpaid past its due date',
  INVOICE_SETTLED: 'an overdue invoice was paid or voided',
  ARCHIVED: 'the contract was archived',
};

export function transition(s: LifecycleSnapshot, e: LifecycleEvent): LifecycleTransition {
  let phase = s.phase;
  let overdue = s.overdue;
  const hooks: LifecycleHook[] = [];
  const live = phase === 'ACTIVE' || phase === 'RENEWING';
  switch (e.type) {
    case 'TRIAL_ENDED':
      if (phase !== 'TRIAL') break;
      phase = e.converts ? 'ACTIVE' : 'ENDED';
      hooks.push(e.converts ? 'trial_converted' : 'trial_expired');
      break;
    case 'RENEWAL_NOTICE':
      if (phase !== 'ACTIVE') break;
      phase = 'RENEWING';
      hooks.push('renewal_notice');
      break;
    case 'END_DATE_EXTENDED':
      if (phase !== 'RENEWING') break;
      phase = 'ACTIVE';
      hooks.push('renewal_withdrawn');
      break;
    case 'CONTRACT_ENDED':
      if (phase === 'ENDED' || phase === 'ARCHIVED') break;
      phase = 'ENDED';
      hooks.push('contract_ended');
      break;
    case 'INVOICE_OVERDUE':
      // Only a live contract goes into arrears; an ended one keeps its debt without a state change.
      if (overdue.includes(e.invoiceId) || !live) break;
      overdue = [...overdue, e.invoiceId].sort();
      if (overdue.length === 1) hooks.push('arrears_entered');
      break;
    case 'INVOICE_SETTLED':
      if (!overdue.includes(e.invoiceId)) break;
      overdue = overdue.filter((id) => id !== e.invoiceId);
      if (!overdue.length && live) hooks.push('arrears_left');
      break;
    case 'ARCHIVED':
      if (phase === 'ARCHIVED') break;
      phase = 'ARCHIVED';
      hooks.push('contract_archived');
      break;
  }
  const snapshot = { phase, overdue };
  const from = visibleState(s);
  const to = visibleState(snapshot);
  const invoiceId = e.type === 'INVOICE_OVERDUE' || e.type === 'INVOICE_SETTLED' ? e.invoiceId : undefined;
  return {
    snapshot,
    change: from === to ? null : { from, to, reason: REASONS[e.type], ...(invoiceId ? { invoiceId } : {}) },
    hooks,
  };
}
