import type { Decimal } from 'decimal.js';
import { dec } from './money.js';
import type { PaymentGateConfig } from './stripe-metadata.js';

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
  payment_gate_config: PaymentGateConfig;
  /** Whole cents, decimal strings. */
  threshold_amount: string;
  recharge_to_amount: string;
}

/**
 * Metronome's `spend_threshold_configuration`: when what the contract owes for the current period
 * (its live invoice's total, after commits and credits) reaches `threshold_amount`, that amount is
 * billed at once (through the payment gate) as a prepaid commit from the period's start, which
 * then covers the usage already accrued — the period's invoice nets out what was paid.
 */
export interface SpendThresholdConfig {
  commit: ThresholdConfig['commit'];
  is_enabled: boolean;
  payment_gate_config: PaymentGateConfig;
  threshold_amount: string;
}

/** Which configuration a recharge belongs to. */
export type RechargeKind = 'prepaid' | 'spend';

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

/**
 * The spend-threshold counterpart: at or above the threshold, bill `threshold_amount`; the same
 * states (one charge at a time; after a failed payment, nothing until the amount owed has been
 * below the threshold again).
 */
export function spendThresholdStep(prev: RechargeStatus | undefined, owed: Decimal | string, cfg: Pick<SpendThresholdConfig, 'is_enabled' | 'threshold_amount'>): RechargeStep {
  const status = prev ?? 'ok';
  if (!cfg.is_enabled || status === 'recharging') return { status };
  const reached = dec(owed).gte(dec(cfg.threshold_amount));
  if (status === 'failed') return { status: reached ? 'failed' : 'ok' };
  return reached ? { status: 'recharging', recharge: dec(cfg.threshold_amount).toFixed() } : { status: 'ok' };
}
