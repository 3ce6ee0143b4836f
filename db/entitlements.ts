import type { EntityManager } from '@mikro-orm/postgresql';
import { entitlements, type ContractAccess, type GatingAlert } from '../billing/entitlements.js';
import type { LifecycleState } from '../billing/lifecycle.js';
import { sum, dec } from '../billing/money.js';
import { isInTrialCharge, trialCapUsage } from '../billing/trial-cap.js';
import { Contract, type StoredInvoiceLine } from './entities.js';
import { contractTrial, customerDrafts, loadPricing } from './invoices.js';
import { pgTextArray } from './sql.js';

/**
 * A customer's entitlements computed from PostgreSQL (billing/entitlements.ts decides). The API
 * answers them from memory (api/entitlements-cache.ts); this runs only when a customer's entry is
 * missing or was invalidated. Invalidation is `pg_notify('accrue_entitlements', customer id)`,
 * sent in the transactions that change an input: lifecycle transitions, gating alerts entering or
 * leaving alarm, and evaluations of customers in a capped trial (their usage moves the cap).
 */
export const ENTITLEMENTS_CHANNEL = 'accrue_entitlements';

export interface EntitlementsView {
  data: { product_id: string; product_name: string; entitled: boolean; reason: string }[];
  evaluated_at: string;
}

/** Tells every API process to forget the customer's entitlements (`'*'`: everyone's) when the transaction commits. */
export async function invalidateEntitlements(em: EntityManager, customerId: string | '*'): Promise<void> {
  await em.execute(`select pg_notify(?, ?)`, [ENTITLEMENTS_CHANNEL, customerId]);
}

export async function computeEntitlements(em: EntityManager, customerId: string, now = new Date()): Promise<EntitlementsView> {
  const t = now.getTime();
  const contracts = (await em.find(Contract, { customerId, startingAt: { $lte: now } }, { orderBy: { startingAt: 'asc', id: 'asc' } }));
  if (!contracts.length) return { data: [], evaluated_at: now.toISOString() };
  const last = new Map((await em.execute<{ contract_id: string; state: LifecycleState; hooks: string[] | null }[]>(`
    select distinct on (contract_id) contract_id::text as contract_id, state, hooks from contract_lifecycle_transition
    where contract_id = any(?::uuid[]) order by contract_id, seq desc`, [pgTextArray(contracts.map((c) => c.id))])).map((r) => [r.contract_id, r]));
  const names = new Map<string, string>();
  const access: ContractAccess[] = [];
  let drafts: Awaited<ReturnType<typeof customerDrafts>> | undefined;
  for (const c of contracts) {
    const pricing = await loadPricing(em, c.rateCardId);
    const winners = new Map<string, { entitled: boolean; startingAt: number; createdAt: number; productId: string }>();
    for (const r of pricing.rates) {
      if (r.startingAt > t || (r.endingBefore !== null && r.endingBefore <= t)) continue;
      const key = `${r.productId}|${JSON.stringify(r.pricingGroupValues)}`;
      const w = winners.get(key);
      if (!w || r.startingAt > w.startingAt || (r.startingAt === w.startingAt && r.createdAt > w.createdAt)) winners.set(key, { entitled: r.entitled, startingAt: r.startingAt, createdAt: r.createdAt, productId: r.productId });
    }
    const productIds = [...new Set([...winners.values()].filter((w) => w.entitled).map((w) => w.productId))];
    for (const id of productIds) names.set(id, pricing.products.get(id)?.name ?? id);
    const logged = last.get(c.id);
    const trial = contractTrial(c);
    const inTrial = trial !== null && Date.parse(trial.window.start) <= t && t < Date.parse(trial.window.end);
    const state: LifecycleState = logged?.state ?? (c.archivedAt ? 'ARCHIVED' : inTrial ? 'TRIAL' : 'ACTIVE');
    let trialCapReached = false;
    if (state === 'TRIAL' && trial?.spec.spending_cap) {
      drafts ??= await customerDrafts(em, customerId, now);
      const frozen = await em.execute<{ line_items: StoredInvoiceLine[] }[]>(`select line_items from invoice where contract_id = ? and status <> 'VOID'`, [c.id]);
      const lines = [...frozen.flatMap((i) => i.line_items), ...drafts.filter((d) => d.contract.id === c.id).flatMap((d) => d.view.lines)];
      const charges = sum(lines.filter((l) => isInTrialCharge({ type: l.type, startingAt: l.starting_at, endingBefore: l.ending_before, discountId: l.discount_id }, trial.window)).map((l) => dec(l.total)));
      trialCapReached = trialCapUsage(trial.spec, charges).usedUp;
    }
    access.push({
      contractId: c.id, state, endedByTrial: (logged?.hooks ?? []).includes('trial_expired'),
      gatesArrears: c.terms?.arrears_policy?.gate_access === true, trialCapReached, productIds,
    });
  }
  const alarms = (await em.execute<{ alert_id: string; name: string; gate_product_ids: string[] | null }[]>(`
    select a.id::text as alert_id, a.name, a.gate_product_ids::text[] as gate_product_ids
    from alert a join customer_alert_state s on s.alert_id = a.id and s.customer_id = ?
    where a.gate_access and a.status = 'enabled' and s.status = 'in_alarm'
    order by a.created_at, a.id`, [customerId])).map((r): GatingAlert => ({ alertId: r.alert_id, name: r.name, productIds: r.gate_product_ids }));
  return {
    data: entitlements(access, alarms).map((e) => ({ product_id: e.productId, product_name: names.get(e.productId) ?? e.productId, entitled: e.entitled, reason: e.reason })),
    evaluated_at: now.toISOString(),
  };
}
