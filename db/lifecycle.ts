import type { EntityManager } from '@mikro-orm/postgresql';
import type { LifecycleState } from '../billing/lifecycle.js';
import type { ContractTerms } from '../billing/contract-terms.js';
import { lifecycleTimes } from '../billing/lifecycle-times.js';
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

/** Idempotent on (contract, seq): a retried or replayed record changes nothing. */
export async function recordLifecycleTransition(em: EntityManager, t: LifecycleTransitionRow): Promise<{ recorded: boolean }> {
  const rows = await em.execute<{ seq: number }[]>(`
    insert into contract_lifecycle_transition (contract_id, seq, state, from_state, at, reason, invoice_id, alert_id, hooks)
    values (?, ?, ?, ?, ?, ?, ?, ?, ?::text[])
    on conflict (contract_id, seq) do nothing
    returning seq`, [t.contractId, t.seq, t.state, t.from, t.at, t.reason, t.invoiceId ?? null, t.alertId ?? null, pgTextArray(t.hooks ?? [])]);
  return { recorded: rows.length > 0 };
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
