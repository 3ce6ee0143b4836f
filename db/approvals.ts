import type { EntityManager } from '@mikro-orm/postgresql';
import { decideApproval, type ApprovalPolicy } from '../billing/approval-policy.js';
import type { LifecycleSettings } from '../stack/config.js';

/**
 * Invoices waiting for finance, and the one definition of "the previous period's invoice" that the
 * approval decision (ACCRUE_APPROVAL_CHANGE_PCT) and the pending-approval queue share: the
 * newest non-void invoice of the same contract whose period ends where this one starts. A
 * late-usage invoice (an empty period at the contract's end) has no previous period, and is
 * nobody's previous period.
 */
const PREVIOUS = `
  left join lateral (
    select p.total::text as total from invoice p
    where p.contract_id = i.contract_id and p.period_end = i.period_start and p.id <> i.id
      and p.status <> 'VOID' and p.period_start < p.period_end and i.period_start < i.period_end
    order by p.created_at desc, p.id desc limit 1
  ) prev on true`;

/** The previous period's total (cents, decimal string), or undefined when there is none. */
export async function previousPeriodTotal(em: EntityManager, invoiceId: string): Promise<string | undefined> {
  const rows = await em.execute<{ total: string | null }[]>(`select prev.total from invoice i ${PREVIOUS} where i.id = ?`, [invoiceId]);
  return rows[0]?.total ?? undefined;
}

export interface PendingApprovalRow {
  invoice_id: string;
  customer_id: string;
  customer_name: string;
  contract_id: string;
  period_start: string;
  period_end: string;
  total: string;
  previous_total: string | null;
  approval_status: 'PENDING_APPROVAL' | 'REJECTED';
  waiting_since: string;
}

/**
 * Frozen invoices not yet finalized — pending, or rejected and waiting for a fixed version to be
 * approved — oldest first. A pending invoice that its approval policy lets through (NEVER, ABOVE
 * and not above, no large change) is not listed: its close finalizes it a moment after the freeze,
 * and finance has nothing to decide (`decideApproval`, the rule the close itself applies). `waiting_since` is when the invoice was first frozen (the row's
 * creation); a re-freeze after a rejection does not move it. Timestamps as ISO 8601 (UTC).
 */
export async function pendingApprovals(em: EntityManager, settings: Pick<LifecycleSettings, 'approvalPolicy' | 'approvalChangePct'>): Promise<PendingApprovalRow[]> {
  const rows = await em.execute<(Omit<PendingApprovalRow, 'period_start' | 'period_end' | 'waiting_since'> & Record<'period_start' | 'period_end' | 'waiting_since', Date | string>
    & { policy: ApprovalPolicy | null })[]>(`
    select i.id::text as invoice_id, i.customer_id::text as customer_id, c.name as customer_name, i.contract_id::text as contract_id,
      i.period_start, i.period_end, i.total::text as total, prev.total as previous_total, i.approval_status, i.created_at as waiting_since,
      k.terms -> 'approval_policy' as policy
    from invoice i join customer c on c.id = i.customer_id left join contract k on k.id = i.contract_id ${PREVIOUS}
    where i.status = 'DRAFT' and i.approval_status in ('PENDING_APPROVAL', 'REJECTED')
    order by i.created_at, i.id`);
  const iso = (t: Date | string) => new Date(t).toISOString();
  const waits = (r: (typeof rows)[number]) => {
    if (r.approval_status === 'REJECTED') return true;
    try {
      return decideApproval({
        contractPolicy: r.policy ?? undefined, defaultPolicy: settings.approvalPolicy, total: r.total,
        previousTotal: r.previous_total ?? undefined, changePct: settings.approvalChangePct,
      }).approvalRequired;
    } catch {
      return true; // a policy the decision cannot read: the close waits for finance, so list it
    }
  };
  return rows.filter(waits).map(({ policy: _policy, ...r }) => ({ ...r, period_start: iso(r.period_start), period_end: iso(r.period_end), waiting_since: iso(r.waiting_since) }));
}
