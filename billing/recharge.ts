import type { Decimal } from 'decimal.js';
import { dec } from './money.js';

/**
 * Auto-recharge of a prepaid balance (Metronome's `prepaid_balance_threshold_configuration`): the
 * one rule for when a contract's remaining prepaid balance calls for a recharge and of how much.
 * Pure. States: `ok` (watching), `recharging` (a recharge is under way: no second one), `failed`
 * (the last recharge's payment failed: no new attempt until the balance has been above the
 * threshold again — a top-up, a payment made another way — or the configuration is enabled again).
 */
export interface ThresholdConfig {
  commit: { product_id: string; name?: string; description?: string; priority?: number; applicable_product_ids?: string[]; applicable_product_tags?: string[] };
  is_enabled: boolean;
  payment_gate_config: { payment_gate_type: 'NONE' | 'STRIPE' };
  /** Whole cents, decimal strings. */
  threshold_amount: string;
  recharge_to_amount: string;
}

export type RechargeStatus = 'ok' | 'recharging' | 'failed';

export interface RechargeStep {
  status: RechargeStatus;
  /** Set when this evaluation starts a recharge: the amount to buy, whole cents. */
  recharge?: string;
}

export function rechargeStep(prev: RechargeStatus | undefined, balance: Decimal | string, cfg: Pick<ThresholdConfig, 'is_enabled' | 'threshold_amount' | 'recharge_to_amount'>): RechargeStep {
  const status = prev ?? 'ok';
  if (!cfg.is_enabled || status === 'recharging') return { status };
  const left = dec(balance);
  const low = left.lte(dec(cfg.threshold_amount));
  if (status === 'failed') return { status: low ? 'failed' : 'ok' };
  if (!low) return { status: 'ok' };
  const amount = dec(cfg.recharge_to_amount).minus(left).ceil();
  return amount.gt(0) ? { status: 'recharging', recharge: amount.toFixed() } : { status: 'ok' };
}
