import type { LifecycleState } from './lifecycle.js';

/**
 * Access gating: whether a customer may use a product right now — the one rule, pure. A product is
 * entitled when at least one of the customer's contracts that prices it (an entitled rate on its
 * rate card) grants it; a contract does not grant access when:
 * - it has ENDED (`contract_ended`; `trial_expired` when it ended with its trial) or is ARCHIVED;
 * - it is in ARREARS and its `arrears_policy.gate_access` is true (`arrears`);
 * - it is in its TRIAL and the trial's spending cap is used up (`trial_spending_cap_reached`);
 * - an alert created with `gate_access: true` is in alarm for the customer, for that product or
 *   for all products (`alert_in_alarm`).
 * Otherwise it grants access with the contract's state as the reason (`ACTIVE`, `TRIAL`, …).
 */
export interface ContractAccess {
  contractId: string;
  state: LifecycleState;
  /** The contract ended because its trial expired without conversion. */
  endedByTrial: boolean;
  gatesArrears: boolean;
  trialCapReached: boolean;
  /** Products it prices with an entitled rate now. */
  productIds: string[];
}

export interface GatingAlert { alertId: string; name: string; productIds: string[] | null }

export interface Entitlement { productId: string; entitled: boolean; reason: string }

export function contractGate(c: ContractAccess): string | null {
  if (c.state === 'ENDED') return c.endedByTrial ? 'trial_expired' : 'contract_ended';
  if (c.state === 'ARCHIVED') return 'contract_archived';
  if (c.state === 'ARREARS' && c.gatesArrears) return 'arrears';
  if (c.state === 'TRIAL' && c.trialCapReached) return 'trial_spending_cap_reached';
  return null;
}

export function entitlements(contracts: readonly ContractAccess[], alarms: readonly GatingAlert[]): Entitlement[] {
  const products = [...new Set(contracts.flatMap((c) => c.productIds))].sort();
  return products.map((productId) => {
    const alarm = alarms.find((a) => a.productIds === null || a.productIds.includes(productId));
    let denied: string | null = null;
    for (const c of contracts.filter((x) => x.productIds.includes(productId))) {
      const gate = contractGate(c) ?? (alarm ? `alert_in_alarm: ${alarm.name}` : null);
      if (!gate) return { productId, entitled: true, reason: c.state };
      denied ??= gate;
    }
    return { productId, entitled: false, reason: denied! };
  });
}
