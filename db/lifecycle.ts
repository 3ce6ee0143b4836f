import type { EntityManager } from '@mikro-orm/postgresql';
import type { LifecycleState } from '../billing/lifecycle.js';
import type { ContractTerms } from '../billing/contract-terms.js';
import { lifecycleTimes } from '../billing/lifecycle-times.js';
import { invalidateEntitlements } from './entitlements.js';
import { enqueueNotification } from './notifications.js';
import { OUTBOUND_CHANNEL, wake } from './wakeup.js';
import { pgTextArray } from './sql.js';

type ContractLike = { id: string; startingAt: Date; endingBefore?: Date | null; createdAt: Date; archivedAt?: Date | null; terms?: ContractTerms | null };

/** One row of a contract's lifecycle log (`contract_lifecycle_transition`). */
export interface LifecycleTransitionRow {
  contractId: string;
  /** Numbered by the contract's workflow from 0 (the state it was created in). */
  seq: number;
  state: LifecycleState;
  from: LifecycleState | null;
  at: string;
  reason: string;
  invoiceId?: string;
  alertId?: string;
  hooks?: string[];
}

export interface LifecycleView {
  state: LifecycleState;
  since: string;
  history: { state: LifecycleState; from: LifecycleState | null; at: string; reason: string; invoice_id?: string; alert_id?: string }[];
}

/**
 * Idempotent on (contract, seq): a retried or replayed record changes nothing. Writes, in the same
 * transaction, the outbound notifications the transition causes — `contract.create` for the first
 * record (written by the contract's workflow, so only a contract that really started is
 * announced), `accrue.contract.lifecycle_changed` for later ones, `contract.end` on ENDED — and
 * marks the customer for alert evaluation (balances and gating follow the lifecycle) and tells
 * the API replicas its entitlements changed.
 */
export async function recordLifecycleTransition(em: EntityManager, t: LifecycleTransitionRow): Promise<{ recorded: boolean }> {
  return em.transactional(async (tx) => {
    const rows = await tx.execute<{ seq: number; customer_id: string }[]>(`
      insert into contract_lifecycle_transition (contract_id, seq, state, from_state, at, reason, invoice_id, alert_id, hooks)
      values (?, ?, ?, ?, ?, ?, ?, ?, ?::text[])
      on conflict (contract_id, seq) do nothing
      returning seq, (select customer_id::text from contract where id = contract_id) as customer_id`,
    [t.contractId, t.seq, t.state, t.from, t.at, t.reason, t.invoiceId ?? null, t.alertId ?? null, pgTextArray(t.hooks ?? [])]);
    const row = rows[0];
    if (!row) return { recorded: false };
    const base = { contract_id: t.contractId, customer_id: row.customer_id };
    if (t.seq === 0) {
      await enqueueNotification(tx, { type: 'contract.create', dedupKey: `contract.create:${t.contractId}`, customerId: row.customer_id, properties: { ...base, lifecycle_state: t.state, timestamp: t.at } });
    } else {
      await enqueueNotification(tx, {
        type: 'accrue.contract.lifecycle_changed', dedupKey: `lifecycle:${t.contractId}:${t.seq}`, customerId: row.customer_id,
        properties: { ...base, from: t.from, to: t.state, reason: t.reason, at: t.at, ...(t.invoiceId ? { invoice_id: t.invoiceId } : {}) },
      });
    }
    if (t.state === 'ENDED') {
      await enqueueNotification(tx, { type: 'contract.end', dedupKey: `contract.end:${t.contractId}`, customerId: row.customer_id, properties: { ...base, reason: t.reason, timestamp: t.at } });
    }
    await tx.execute(`insert into alert_dirty (customer_id) select ?::uuid where exists (select 1 from alert where status = 'enabled')`, [row.customer_id]);
    await wake(tx, OUTBOUND_CHANNEL);
    await invalidateEntitlements(tx, row.customer_id);
    return { recorded: true };
  });
}

/** The last recorded transition of each contract (none for contracts from before the log). */
export async function latestLifecycle(em: EntityManager, contractIds: string[]): Promise<Map<string, { state: LifecycleState; since: string; seq: number }>> {
  if (!contractIds.length) return new Map();
  const rows = await em.execute<{ contract_id: string; state: LifecycleState; at: Date; seq: number }[]>(`
    select distinct on (contract_id) contract_id::text as contract_id, state, at, seq
    from contract_lifecycle_transition where contract_id = any(?::uuid[])
    order by contract_id, seq desc`, [pgTextArray(contractIds)]);
  return new Map(rows.map((r) => [r.contract_id, { state: r.state, since: new Date(r.at).toISOString(), seq: r.seq }]));
}

/** The contract's state, since when, and its whole story, oldest first. */
export async function lifecycleView(em: EntityManager, contract: ContractLike): Promise<LifecycleView> {
  const rows = await em.execute<{ state: LifecycleState; from_state: LifecycleState | null; at: Date; reason: string; invoice_id: string | null; alert_id: string | null }[]>(`
    select state, from_state, at, reason, invoice_id::text as invoice_id, alert_id::text as alert_id
    from contract_lifecycle_transition where contract_id = ? order by seq`, [contract.id]);
  const history = rows.map((r) => ({
    state: r.state, from: r.from_state, at: new Date(r.at).toISOString(), reason: r.reason,
    ...(r.invoice_id ? { invoice_id: r.invoice_id } : {}), ...(r.alert_id ? { alert_id: r.alert_id } : {}),
  }));
  const last = history[history.length - 1];
  if (last) return { state: last.state, since: last.at, history };
  return { ...unloggedState(contract), history };
}

/** The visible state of each contract: its last logged transition, or what its record says. */
export async function lifecycleStates(em: EntityManager, contracts: ContractLike[]): Promise<Map<string, { state: LifecycleState; since: string }>> {
  const latest = await latestLifecycle(em, contracts.map((c) => c.id));
  return new Map(contracts.map((c) => [c.id, latest.get(c.id) ?? unloggedState(c)]));
}

/**
 * A contract whose workflow has not recorded a transition yet (created a moment ago, or from
 * before the log): archived, in its trial, or active.
 */
function unloggedState(c: ContractLike): { state: LifecycleState; since: string } {
  if (c.archivedAt) return { state: 'ARCHIVED', since: c.archivedAt.toISOString() };
  const trial = lifecycleTimes(c, { trialReminderDays: 0 }).trial;
  if (trial && Date.now() < Date.parse(trial.endsAt)) return { state: 'TRIAL', since: trial.startsAt };
  return { state: 'ACTIVE', since: c.createdAt.toISOString() };
}
